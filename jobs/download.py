"""spark-submit entry point: `spark-submit jobs/download.py DATASET [OPTIONS]` == `curate download ...`."""

import sys

from curate.cli import main

if __name__ == "__main__":
    main(["download", *sys.argv[1:]])
