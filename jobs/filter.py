"""spark-submit entry point: ``spark-submit jobs/filter.py DATASET --filter ...`` == ``curate filter ...``."""

import sys

from curate.cli import main

if __name__ == "__main__":
    main(["filter", *sys.argv[1:]])
