"""Files written atomically, for every file smallchains saves (chains, fits, plots, reports).

The content goes to a temporary file in the target's folder, is flushed to disk, then renamed
over the target (and the folder synced), so a failure or a kill at any moment leaves either the
old file or the new one whole.  Errors name the *target* (not the hidden temporary file) and
say how to fix them; temporary files left by a killed writer (their process is gone) are removed
by the next save of the same target.
"""

from __future__ import annotations

import glob
import os
import tempfile


def check_target(path) -> str:
    """The absolute target path, after checking that its folder exists and is writable."""
    target = os.path.abspath(os.fspath(path))
    directory = os.path.dirname(target)
    if os.path.isdir(target):
        raise IsADirectoryError(f"cannot save to {os.fspath(path)!r}: it is a directory; give a file name")
    if not os.path.isdir(directory):
        raise FileNotFoundError(
            f"cannot save to {os.fspath(path)!r}: the folder {directory!r} does not exist; "
            "create it first (os.makedirs)"
        )
    if not os.access(directory, os.W_OK | os.X_OK):
        raise PermissionError(
            f"cannot save to {os.fspath(path)!r}: the folder {directory!r} is not writable; "
            "choose another folder or change its permissions"
        )
    if os.path.exists(target) and not os.access(target, os.W_OK) and os.name != "posix":
        raise PermissionError(f"cannot save to {os.fspath(path)!r}: the file is read-only")
    return target


def _prefix(target):
    return f".{os.path.basename(target)}.{os.getpid()}."


def _remove_stale(target):
    """Delete temporary files of ``target`` whose writing process no longer exists."""
    pattern = os.path.join(glob.escape(os.path.dirname(target)), glob.escape(f".{os.path.basename(target)}.") + "*.tmp")
    for tmp in glob.glob(pattern):
        pid = os.path.basename(tmp)[len(os.path.basename(target)) + 2 :].split(".", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        except OSError:  # exists but not ours (PermissionError): leave it
            pass


def atomic_write(path, write, suffix="", text=True, mode=None):
    """Call ``write(fh)`` on a temporary file next to ``path``, then rename it to ``path``.

    ``mode``: permission bits for the new file (default: those of the file it replaces, else
    the process's default).  Returns ``path``.
    """
    target = check_target(path)
    _remove_stale(target)
    if mode is None and os.path.exists(target):
        mode = os.stat(target).st_mode & 0o7777
    try:
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(target), prefix=_prefix(target), suffix=".tmp")
    except OSError as exc:
        raise type(exc)(exc.errno, f"cannot save to {os.fspath(path)!r}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w" if text else "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        if mode is None:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if os.name == "posix":  # make the rename itself durable
        try:
            dfd = os.open(os.path.dirname(target), os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:
            pass
    return path
