"""Where the ``forge`` command starts: ``python -m runtime``, and the built executable.

The executable runs this file as its script (`runtime._executable`): there,
``./app`` serves and ``./app CMD ...`` is ``forge CMD ...``.
"""

import multiprocessing
import sys
from pathlib import Path


def main() -> None:
    # Imported absolutely: in the executable this file is a script, not part of a package.
    from runtime._cli import main as forge

    if not getattr(sys, "frozen", False):
        forge()
        return
    # Must come before the CLI: a frozen program started as a multiprocessing child
    # runs the child's code here instead.
    multiprocessing.freeze_support()
    forge(args=sys.argv[1:] or ["run"], prog_name=Path(sys.argv[0]).name)


if __name__ == "__main__":
    main()
