"""`python -m pcsim ...` runs the `pcsim` command."""

from pcsim.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
