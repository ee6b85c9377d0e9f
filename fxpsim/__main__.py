"""``python -m fxpsim``: the same as the ``fxpsim`` console script."""

import sys

from .cli import main

sys.exit(main())
