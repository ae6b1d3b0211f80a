"""``python -m app [options]``: the same as ``gandissect app [options]``."""

import sys

from gandissect.cli import main

if __name__ == "__main__":
    sys.exit(main(["app", *sys.argv[1:]]))
