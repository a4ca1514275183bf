"""Running R and nlme from the benchmarks (Debian: apt-get install -y r-base-core r-cran-nlme)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

INSTALL = "apt-get install -y r-base-core r-cran-nlme"


def have_nlme():
    """None when Rscript and nlme are usable, else why not."""
    if shutil.which("Rscript") is None:
        return "Rscript is not on the PATH"
    r = subprocess.run(
        ["Rscript", "-e", "suppressPackageStartupMessages(library(nlme))"], capture_output=True, text=True
    )
    if r.returncode != 0:
        return f"R has no nlme package ({r.stderr.strip().splitlines()[-1] if r.stderr.strip() else 'library failed'})"
    return None


def rscript(code, *args):
    """Run R ``code`` with ``args`` (commandArgs(TRUE)); the completed process, or RuntimeError."""
    with tempfile.NamedTemporaryFile("w", suffix=".R", delete=False) as fh:
        fh.write(code)
    try:
        r = subprocess.run(["Rscript", fh.name, *map(str, args)], capture_output=True, text=True)
    finally:
        os.unlink(fh.name)
    if r.returncode != 0:
        raise RuntimeError(f"Rscript failed:\n{r.stderr}")
    return r


def nlme_version():
    r = rscript('cat(as.character(packageVersion("nlme")), R.version$major, R.version$minor)')
    v, major, minor = r.stdout.split()
    return f"nlme {v}, R {major}.{minor}"
