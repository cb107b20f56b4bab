def main(argv=None):
    raise SystemExit("pcsim: CLI not yet built")
