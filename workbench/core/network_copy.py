"""A run's copy of the user's network file, so resume and export never depend on the original.

A run of `--arch my_nets.py:make_net` keeps `network/my_nets.py` and `network/network.json`
(where it came from, the factory, the copy's sha256) in its folder; an export bundle gets the
same two files. Built-in architectures have no copy, and every function here passes them by.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from workbench.core.atomic import write_json_atomic
from workbench.core.catalog import parse_user_arch
from workbench.core.errors import WorkbenchError
from workbench.core.safe_read import MB, NotReadable, is_regular, read_bytes, read_text

NETWORK_DIR = "network"
RECORD = "network.json"
FILE_LIMIT = 64 * MB  # a network file or its record; larger is not Python a person wrote


def _sha256(path: Path) -> str:
    return hashlib.sha256(read_bytes(path, FILE_LIMIT)).hexdigest()


def keep_copy(folder: Path, arch: str) -> dict[str, Any] | None:
    """Copy a user network file into folder/network/ with its record; None for a built-in."""
    parsed = parse_user_arch(arch)
    if parsed is None:
        return None
    original = Path(parsed[0]).expanduser()
    target = folder / NETWORK_DIR
    target.mkdir(exist_ok=True)
    try:
        shutil.copyfile(original, target / original.name)
    except OSError as error:
        raise WorkbenchError(f"cannot copy {original} into the run folder ({error.strerror or error})") from None
    record = {"original": str(original), "file": original.name, "factory": parsed[1],
              "sha256": _sha256(target / original.name)}
    write_json_atomic(target / RECORD, record)
    return record


def record_in(folder: Path) -> dict[str, Any] | None:
    """The network.json of a run folder or bundle, or None when it has none (a built-in network)."""
    path = folder / NETWORK_DIR / RECORD
    if not os.path.lexists(path):
        return None
    try:
        record = json.loads(read_text(path, FILE_LIMIT))
    except NotReadable:
        raise
    except (OSError, ValueError, RecursionError) as error:
        raise WorkbenchError(f"{path} is not readable JSON ({error}); the folder was changed by hand") from None
    if not isinstance(record, dict) or not all(isinstance(record.get(k), str) for k in ("file", "factory", "sha256")):
        raise WorkbenchError(f"{path} lacks file, factory or sha256; the folder was changed by hand")
    if Path(record["file"]).name != record["file"] or not record["file"].endswith(".py"):
        raise WorkbenchError(f"{path} names {record['file']!r}, not a .py file beside it")
    return record


def arch_in(folder: Path, arch: str) -> str:
    """The architecture to build for a run folder or bundle: its own copy of a user file, else `arch`.

    A user file's copy that is missing or was changed after the run began is refused: the weights
    were trained for the network as it was then.
    """
    if parse_user_arch(arch) is None:
        return arch
    record = record_in(folder)
    if record is None:
        raise WorkbenchError(f"{folder} has no copy of its network file ({NETWORK_DIR}/{RECORD} is missing)")
    copy = folder / NETWORK_DIR / record["file"]
    if not os.path.lexists(copy) or _sha256(copy) != record["sha256"]:
        raise WorkbenchError(f"{copy} is missing or was changed after the run began (its sha256 no longer "
                             "matches network.json); restore it")
    return f"{copy}:{record['factory']}"


def drift(folder: Path, arch: str) -> str:
    """A sentence when the user's original file differs from the run's copy or is gone, else ""."""
    record = record_in(folder) if parse_user_arch(arch) else None
    if record is None:
        return ""
    original = Path(record.get("original", ""))
    if not is_regular(original):
        return f"{original} is gone; the run's copy ({NETWORK_DIR}/{record['file']}) is used"
    if _sha256(original) != record["sha256"]:
        return (f"{original} changed since this run began; the run's copy ({NETWORK_DIR}/{record['file']}) "
                "is used, as the weights were trained for it")
    return ""


def copy_between(source: Path, target: Path) -> dict[str, Any] | None:
    """Copy a run's network/ into an export bundle; returns its record (None for a built-in)."""
    record = record_in(source)
    if record is None:
        return None
    (target / NETWORK_DIR).mkdir(exist_ok=True)
    for name in (record["file"], RECORD):
        shutil.copyfile(source / NETWORK_DIR / name, target / NETWORK_DIR / name)
    return record
