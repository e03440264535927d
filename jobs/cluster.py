"""spark-submit jobs/cluster.py ARGS == curate cluster ARGS."""

import sys

from curate.cli import main

if __name__ == "__main__":
    main(["cluster", *sys.argv[1:]])
