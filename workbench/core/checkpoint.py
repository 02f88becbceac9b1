"""Checkpoints: atomic saves that survive a crash mid-write, and loads that never run code.

A checkpoint is a plain dict (model, optimizer, scaler, RNG states, epoch, step, config,
metrics so far; see training/state.py). Saving writes a temp file in the same folder, fsyncs
it and renames it over the old one, keeping the previous `last` as `last.prev.pt`, so a
kill at any instant leaves at least one complete checkpoint. Loading always uses
`torch.load(weights_only=True)`: a pickle that tries to build anything but tensors and
plain containers is refused before it can run.
"""

from __future__ import annotations

import errno
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from workbench.core.atomic import clean_temp_files, write_atomic
from workbench.core.checkpoint_fields import check_fields
from workbench.core.errors import UnsafeFile, WorkbenchError
from workbench.core.safe_read import GB, NotReadable, open_regular

LAST = "last.pt"
PREVIOUS = "last.prev.pt"
BEST = "best.pt"
CHECKPOINT_LIMIT = 64 * GB  # larger is no checkpoint a run here wrote

__all__ = ["BEST", "LAST", "PREVIOUS", "all_finite", "clean_temp_files", "load_checkpoint", "load_latest",
           "save_atomic", "save_last"]


def save_atomic(state: dict[str, Any], path: Path, before_replace=None) -> None:
    """Write `state` to `path` so that readers see the old file or the new one, never half.

    torch.save reports a full disk as a RuntimeError from its zip writer; it becomes the same
    sentence as any other full disk, and the old file stays.
    """
    def write(handle) -> None:
        try:
            torch.save(state, handle)
        except RuntimeError as error:
            if "inline_container" in str(error) or "write" in str(error).lower():
                raise OSError(errno.ENOSPC if _disk_full(path) else errno.EIO, str(error).splitlines()[0]) from None
            raise

    write_atomic(path, write, before_replace)


def save_last(state: dict[str, Any], folder: Path) -> Path:
    """Save as last.pt; only once the new one is complete does the old one become last.prev.pt."""
    last = folder / LAST

    def keep_previous() -> None:
        if last.exists():
            os.replace(last, folder / PREVIOUS)

    save_atomic(state, last, before_replace=keep_previous)
    return last


def _disk_full(path: Path) -> bool:
    try:
        stats = os.statvfs(Path(path).parent)
    except OSError:
        return False
    return stats.f_bavail * stats.f_frsize < 64 * 2**20


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with weights_only=True; any problem becomes a one-line WorkbenchError
    (UnsafeFile when it holds more than weights)."""
    try:
        with open_regular(path, CHECKPOINT_LIMIT) as handle:  # a pipe would block the read forever
            state = torch.load(handle, map_location=map_location, weights_only=True)
    except NotReadable as error:
        raise WorkbenchError(f"checkpoint {error}") from None
    except FileNotFoundError:
        raise WorkbenchError(f"checkpoint {path} does not exist") from None
    except pickle.UnpicklingError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else "unsafe content"
        raise UnsafeFile(f"refusing to load {path}: it holds more than weights ({first_line[:160]})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as error:
        raise WorkbenchError(f"checkpoint {path} is damaged or truncated ({_short(error)})") from None
    if not isinstance(state, dict) or "model" not in state:
        raise WorkbenchError(f"{path} is not a workbench checkpoint")
    check_fields(state, path)  # a count or score from the file is bounded like its flag
    return state


def load_latest(folder: Path, map_location: str | torch.device = "cpu") -> tuple[dict[str, Any], Path, list[str]]:
    """The newest loadable checkpoint of a run: last, then last.prev, then best. Writes nothing.

    Returns (state, path, problems) where problems describes checkpoints that were skipped.
    An unsafe checkpoint is never skipped quietly: it stops the search.
    """
    problems: list[str] = []
    for name in (LAST, PREVIOUS, BEST):
        path = folder / name
        if not path.exists():
            continue
        try:
            return load_checkpoint(path, map_location), path, problems
        except UnsafeFile:
            raise
        except WorkbenchError as error:
            problems.append(str(error))
    detail = f": {problems[-1]}" if problems else ""
    raise WorkbenchError(f"no usable checkpoint in {folder}{detail}")


def _short(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:160]


_ISFINITE_TYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.complex64, torch.complex128)


def all_finite(model: torch.nn.Module) -> bool:
    """False when any weight or buffer is NaN or infinite (never checkpoint those)."""
    tensors = list(model.parameters()) + [b for b in model.buffers() if b.is_floating_point()]
    if not tensors:
        return True
    # isfinite has no kernel for every floating type (float8): judge those in float32
    flags = torch.stack([torch.isfinite(t if t.dtype in _ISFINITE_TYPES else t.float()).all() for t in tensors])
    return bool(flags.all())
