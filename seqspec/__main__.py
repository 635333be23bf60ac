"""`python -m seqspec`: the seqspec command (what torchrun runs: torchrun --nproc-per-node N -m seqspec train ...)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
