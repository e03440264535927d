"""spark-submit entry point: `spark-submit jobs/coverage.py DATASET --eval FOLDER --subset S` == `curate coverage ...`."""

import sys

from curate.cli import main

if __name__ == "__main__":
    main(["coverage", *sys.argv[1:]])
