"""``python -m reelserve`` runs the command-line interface."""

from reelserve.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
