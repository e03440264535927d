"""spark-submit entry point: `spark-submit jobs/ingest.py INPUTS -o DATASET` == `curate ingest ...`."""

import sys

from curate.cli import main

if __name__ == "__main__":
    main(["ingest", *sys.argv[1:]])
