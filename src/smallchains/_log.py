"""The package's logger: progress and compile notices (never results).

smallchains logs to the logger ``"smallchains"`` (children ``"smallchains.compile"``,
``"smallchains.pk"``, ...).  Following the library convention, nothing is printed unless
the application configures logging; the command line and ``smallchains warmup`` do so::

    import logging
    logging.basicConfig(level=logging.INFO)   # show compile notices and fit progress
"""

from __future__ import annotations

import logging

logger = logging.getLogger("smallchains")


def get(name: str) -> logging.Logger:
    """The child logger ``smallchains.<name>``."""
    return logger.getChild(name)
