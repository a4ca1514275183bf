"""Files written atomically: a temporary file in the same folder, flushed, then renamed over the
target, so a failure leaves the old file whole and no temporary file behind."""

from __future__ import annotations

import os
import tempfile


def atomic_write(path, write, suffix="", text=True):
    """Call ``write(fh)`` on a temporary file next to ``path``, then rename it to ``path``."""
    path = os.fspath(path)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".tmp-", suffix=suffix)
    try:
        with os.fdopen(fd, "w" if text else "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
