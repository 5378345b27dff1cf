"""``adedge`` and ``python -m adedge``: the command line, with Ctrl-C handled from the first
instant. Importing the CLI (typer, rich, numpy, OpenCV) takes a noticeable moment, and a
Ctrl-C in it must exit 130 with one line, not print a traceback."""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from adedge.cli import main as cli_main
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    cli_main()


if __name__ == "__main__":
    main()
