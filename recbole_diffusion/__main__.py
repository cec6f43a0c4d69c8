"""``python -m recbole_diffusion [--model=...] [--dataset=...] [--key=value ...]``: the runner."""

import sys

from recbole_diffusion.runner import main

sys.exit(main())
