"""spark-submit entry point: `spark-submit jobs/embed.py DATASET --model NAME [OPTIONS]` == `curate embed ...`."""

import sys

from curate.cli import main

if __name__ == "__main__":
    main(["embed", *sys.argv[1:]])
