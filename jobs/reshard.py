"""spark-submit entry point: ``spark-submit jobs/reshard.py ARGS`` == ``curate reshard ARGS``."""

import sys

from curate.cli import main

if __name__ == "__main__":
    main(["reshard", *sys.argv[1:]])
