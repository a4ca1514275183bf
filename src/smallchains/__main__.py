"""``python -m smallchains ...``: the same command line as ``smallchains``."""

import sys

from .cli import main

sys.exit(main())
