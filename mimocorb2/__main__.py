"""``python -m mimocorb2``: the same as the ``mimocorb2`` command."""

import sys

from .cli import main

sys.exit(main())
