"""The built executable's entry point: ``./app`` serves, ``./app CMD ...`` is ``forge CMD ...``."""

import multiprocessing
import sys
from pathlib import Path


def main() -> None:
    # Must come first: a frozen program started as a multiprocessing child
    # runs the child's code here instead of the CLI.
    multiprocessing.freeze_support()
    from runtime.cli import main as forge

    forge(args=sys.argv[1:] or ["run"], prog_name=Path(sys.argv[0]).name)


if __name__ == "__main__":
    main()
