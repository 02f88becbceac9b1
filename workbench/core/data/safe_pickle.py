"""Unpickle CIFAR batch files without letting them run code: only numpy arrays may be rebuilt.

A pickle can name any importable callable (os.system, builtins.exec) and have it called while
loading. CIFAR batches are dicts of lists, bytes and numpy arrays, so everything but numpy's
array reconstruction is refused.
"""

from __future__ import annotations

import importlib
import pickle
from pathlib import Path
from typing import Any

from workbench.core.errors import WorkbenchError

# (module, name) a CIFAR batch may reference. numpy 2 renamed numpy.core to numpy._core;
# files written by either name the one their writer had.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),  # arrays pickled with protocol 5
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # bytes pickled by Python 3 at protocol 2
}


class RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler that resolves only the numpy names in _ALLOWED."""

    def __init__(self, file: Any, *, source: str, **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise WorkbenchError(
                f"refusing to load {self._source}: it contains {module}.{name}, "
                "which CIFAR batches never need"
            )
        # Prefer numpy 2's numpy._core (numpy.core warns there); numpy 1 only has numpy.core.
        modern = module.replace("numpy.core.", "numpy._core.", 1)
        legacy = module.replace("numpy._core.", "numpy.core.", 1)
        for candidate in dict.fromkeys((modern, legacy)):
            try:
                return getattr(importlib.import_module(candidate), name)
            except ImportError:
                continue
        raise WorkbenchError(f"cannot load {self._source}: numpy has no {module}.{name}")


def load_cifar_batch(path: Path) -> Any:
    """The object pickled in a CIFAR python batch file (keys and strings stay bytes)."""
    with open(path, "rb") as handle:
        return RestrictedUnpickler(handle, source=str(path), encoding="bytes").load()
