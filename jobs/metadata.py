"""spark-submit entry point: `spark-submit jobs/metadata.py match DATASET -m metadata.json` == `curate metadata ...`."""

import sys

from curate.cli import main

if __name__ == "__main__":
    main(["metadata", *sys.argv[1:]])
