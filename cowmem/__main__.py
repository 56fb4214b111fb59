"""``python -m cowmem``: the command line."""

import sys

from .cli import main

# The guard matters: multiprocessing's spawn and forkserver import the
# parent's main module in every worker.
if __name__ == "__main__":
    sys.exit(main())
