"""spark-submit entry point: ``spark-submit jobs/run.py RECIPE.yaml`` == ``curate run RECIPE.yaml``."""

import sys

from curate.cli import main

main(["run", *sys.argv[1:]])
