"""``python -m gandissect.app [options]``: the same as ``gandissect app [options]``.

The entry point sits above both the app and the command line: it hands its options to the
``app`` command, which parses and checks them and calls ``gandissect.app.ui.serve``.
"""

import sys

from gandissect.cli import main

if __name__ == "__main__":
    sys.exit(main(["app", *sys.argv[1:]]))
