"""``python -m mimocorb2.sim.redpitaya``: the simulator's console entry."""

import sys

from .cli import main

sys.exit(main())
