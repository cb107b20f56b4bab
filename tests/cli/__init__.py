from pcsim.cli import main


def run(argv, capsys) -> tuple[int, str, str]:
    """main(argv) in-process -> (exit code, stdout, stderr); argparse's own exits count too."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err
