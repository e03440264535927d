"""spark-submit jobs/decontaminate.py ARGS == curate decontaminate ARGS."""

import sys

from curate.cli import main

if __name__ == "__main__":
    main(["decontaminate", *sys.argv[1:]])
