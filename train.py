"""Entry point: `composer train.py yamls/phase1.yaml [key=value ...]` or `python train.py ... [--dry-run]`."""

import sys

from modernbert_pretrain.train.main import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
