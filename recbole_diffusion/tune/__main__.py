"""``python -m recbole_diffusion.tune``: the hyper-parameter search's command line."""

import sys

from recbole_diffusion.tune.cli import main

sys.exit(main())
