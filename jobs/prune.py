"""spark-submit jobs/prune.py ARGS == curate prune ARGS."""

import sys

from curate.cli import main

if __name__ == "__main__":
    main(["prune", *sys.argv[1:]])
