"""Decoded data sets on disk: one safetensors file per source, written atomically."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from workbench.core.atomic import atomic_path
from workbench.core.errors import WorkbenchError

FORMAT_VERSION = 1  # bump when what a cache file holds changes; old files are then ignored
_FORMAT_NAME = "workbench-dataset"


def path_for(data_dir: Path, label: str, identity: dict[str, Any]) -> Path:
    """The cache file for a source; identity holds everything that changes the decoded tensors."""
    keyed = json.dumps({"format": FORMAT_VERSION, **identity}, sort_keys=True)
    digest = hashlib.sha256(keyed.encode("utf-8")).hexdigest()[:24]
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", label)[:40] or "data"
    return data_dir / "cache" / f"{readable}-{digest}.safetensors"


def read(
    path: Path, warn: Callable[[str], None]
) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """The tensors and metadata stored at path, or None when there is no usable cache there."""
    if not path.is_file():
        return None
    try:
        with safe_open(path, framework="pt") as handle:
            stored = handle.metadata() or {}
            if stored.get("format") != _FORMAT_NAME:
                raise ValueError("not a workbench data set cache")
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 - not a dict
        metadata = {key: json.loads(value) for key, value in stored.items() if key != "format"}
    except (OSError, ValueError, SafetensorError) as error:
        warn(f"ignoring unreadable cache {path} ({error}); decoding again")
        return None
    return tensors, metadata


def write(
    path: Path,
    tensors: dict[str, torch.Tensor],
    metadata: dict[str, Any],
    warn: Callable[[str], None],
) -> None:
    """Store tensors with JSON-encodable metadata; a folder we cannot write to only costs speed."""
    encoded = {key: json.dumps(value) for key, value in metadata.items()}
    encoded["format"] = _FORMAT_NAME
    try:
        with atomic_path(path) as temporary:
            save_file(tensors, str(temporary), metadata=encoded)
    except (OSError, SafetensorError, WorkbenchError) as error:
        warn(f"not caching the decoded data set: cannot write {path.parent} ({error})")
