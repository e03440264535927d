"""``python -m curate``: the same command line as ``curate``."""

import sys

from curate.cli import main

if __name__ == "__main__":
    sys.argv[0] = "curate"  # usage lines say curate, not __main__.py
    main()
