"""spark-submit jobs/dedup.py ARGS == curate dedup ARGS."""

import sys

from curate.cli import main

if __name__ == "__main__":
    main(["dedup", *sys.argv[1:]])
