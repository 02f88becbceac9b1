"""Load an export bundle (model.json + model.safetensors, no pickle), refusing a damaged one in one sentence."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch.nn as nn

from workbench.core import checkpoint as ckpt
from workbench.core import network_copy
from workbench.core.catalog import ARCHITECTURES, parse_user_arch
from workbench.core.errors import WorkbenchError
from workbench.core.export import weights
from workbench.core.models import with_weights
from workbench.core.safe_read import MB, NotReadable, is_regular, read_bytes, read_text

EXPORT_DIR = "export"
META_LIMIT = 64 * MB  # model.json: classes and config, never this large
BUNDLE_FILES = ("model.json", "model.safetensors", "model.pt2", "model.onnx")


def bundle_folder(path: Path) -> Path:
    """The bundle a user named: an export folder, a run folder holding one in export/, or a file
    of the bundle (model.pt2, model.onnx, model.json: its folder)."""
    path = Path(path)
    if path.name in BUNDLE_FILES and is_regular(path):
        return path.parent
    return path / EXPORT_DIR if is_regular(path / EXPORT_DIR / "model.json") else path


def load_bundle(export_dir: Path, trust_code: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model from model.json + model.safetensors alone (no pickle); a damaged or
    hand-edited bundle is refused with one sentence. A bundle of a user's own network holds its
    Python file (network/), which runs only when `trust_code` says the caller trusts its maker."""
    from safetensors import SafetensorError
    from safetensors.torch import load as load_weights

    export_dir = bundle_folder(export_dir)
    weights_path = export_dir / "model.safetensors"
    meta = read_bundle_meta(export_dir, need=weights_path)
    arch = _bundle_arch(export_dir, meta, trust_code)
    data = read_bytes(weights_path, ckpt.CHECKPOINT_LIMIT)  # a pipe or a huge file: one sentence
    try:
        tensors = load_weights(data)
        model = with_weights(arch, meta["in_channels"], meta["num_classes"], meta["image_size"],
                             weights.unpack(tensors, meta), **(meta.get("model_options") or {}))
    except (RuntimeError, OSError, SafetensorError, ValueError, TypeError, KeyError, AttributeError) as error:
        raise WorkbenchError(
            f"the weights in {weights_path} do not fit model.json ({_first_line(error)}); export the run again"
        ) from None
    if not all(bool(t.isfinite().all()) for t in tensors.values() if t.is_floating_point() or t.is_complex()):
        raise WorkbenchError(f"the weights in {weights_path} are not all finite (NaN or infinite); export the run again")
    return model.eval(), meta


def read_bundle_meta(export_dir: Path, need: Path | None = None) -> dict[str, Any]:
    """model.json of a bundle, checked (`need`: another file the caller reads, e.g. the weights)."""
    export_dir = bundle_folder(export_dir)
    meta_path = export_dir / "model.json"
    if not os.path.lexists(meta_path) or (need is not None and not os.path.lexists(need)):
        raise WorkbenchError(
            f"{export_dir} is not an export folder (needs model.json and model.safetensors); "
            "run `workbench export RUN` first"
        )
    try:
        meta = json.loads(read_text(meta_path, META_LIMIT))
    except NotReadable:
        raise
    except (OSError, ValueError, RecursionError) as error:
        raise WorkbenchError(f"{meta_path} is not readable JSON ({_first_line(error)}); export the run again") from None
    problem = bundle_problem(meta)
    if problem:
        raise WorkbenchError(f"{meta_path} is damaged: {problem}; export the run again")
    return meta


def _bundle_arch(export_dir: Path, meta: dict[str, Any], trust_code: bool) -> str:
    """The architecture to build; a user's network file only with trust_code."""
    if parse_user_arch(meta["arch"]) is None:
        return meta["arch"]
    record = network_copy.record_in(export_dir)
    if record is None:
        raise WorkbenchError(f"{export_dir} has no copy of its network file ({network_copy.NETWORK_DIR}/"
                             f"{network_copy.RECORD} is missing); export the run again")
    if not trust_code:
        raise WorkbenchError(
            f"this model's network is Python code ({network_copy.NETWORK_DIR}/{record['file']} in "
            f"{export_dir}, {record['factory']}); loading it runs that code, so pass --trust-code if "
            "you trust who made this bundle, or run its model.pt2 or model.onnx (--format pt2|onnx), which need no code")
    return network_copy.arch_in(export_dir, meta["arch"])


BUNDLE_VERSION = 2  # what model.json's format_version says; a newer one is a newer workbench's


def bundle_problem(meta: Any) -> str:
    """What makes model.json unusable, or "" when it is sound. Export checks what it is about to
    write with this too, so it never writes a bundle predict would refuse."""
    from workbench.core.config import SETTING_BY_NAME

    if not isinstance(meta, dict):
        return "it is not a JSON object"
    version = meta.get("format_version", BUNDLE_VERSION)
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= BUNDLE_VERSION:
        return (f"format_version {version!r} is not one this workbench reads (1..{BUNDLE_VERSION}); "
                "a newer workbench wrote it, or it was edited")
    if not isinstance(meta.get("arch"), str) or (meta["arch"] not in ARCHITECTURES and not parse_user_arch(meta["arch"])):
        return f"arch {meta.get('arch')!r} is not an architecture"
    for key in ("in_channels", "image_size", "num_classes"):
        if not isinstance(meta.get(key), int) or isinstance(meta.get(key), bool) or meta[key] < 1:
            return f"{key} must be a positive whole number, not {meta.get(key)!r}"
    if meta["in_channels"] not in (1, 3):
        return f"in_channels must be 1 or 3, not {meta['in_channels']}"
    size = SETTING_BY_NAME["image_size"]
    if meta["image_size"] > size.high:
        return f"image_size {meta['image_size']} is above --image-size's most ({size.high})"
    classes = meta.get("classes")
    if not isinstance(classes, list) or not all(isinstance(name, str) for name in classes):
        return "classes must be a list of names"
    if len(classes) != meta["num_classes"]:
        return f"it lists {len(classes)} classes but num_classes is {meta['num_classes']}"
    prep = meta.get("preprocessing")
    if not isinstance(prep, dict):
        return "preprocessing is missing"
    for key in ("mean", "std"):
        values = prep.get(key)
        if not isinstance(values, list) or len(values) not in (1, meta["in_channels"]) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values
        ):
            return f"preprocessing {key} must be one finite number per channel ({meta['in_channels']}), not {values!r}"
    if any(v < 1e-6 for v in prep["std"]):  # float32 would make a tinier one zero
        return f"preprocessing std must be positive, not {prep['std']}"
    color = prep.get("color", "L" if meta["in_channels"] == 1 else "RGB")
    if color != ("L" if meta["in_channels"] == 1 else "RGB"):
        return f"preprocessing color {color!r} does not match in_channels {meta['in_channels']} (L for 1, RGB for 3)"
    if prep.get("resize_mode", "stretch") not in ("stretch", "crop", "pad"):
        return f"preprocessing resize_mode must be stretch, crop or pad, not {prep.get('resize_mode')!r}"
    if not isinstance(meta.get("model_options", {}), dict):
        return "model_options must be an object"
    return weights.extra_state_problem(meta)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:200]


def stale_bundle_note(export_dir: Path) -> str:
    """A sentence when the bundle sits in a run folder whose model of the same kind has moved on
    since it was exported (a resume trained more epochs, a better epoch became the best), or ""."""
    found = _exported_and_now(export_dir)
    return _moved_on(*found) if found is not None else ""


def export_line(run_dir: Path) -> str:
    """What a run's export/ holds, for the app's run screen, and whether the run has moved on since."""
    found = _exported_and_now(Path(run_dir) / EXPORT_DIR)
    if found is None:
        return ""
    moved_on = _moved_on(*found)
    if moved_on:
        return f"export/ is out of date: {moved_on} (or press e)"
    return f"export/ holds epoch {found[0]} ({found[1]}), up to date"


def _moved_on(epoch: int, which: str, now: int, run_dir: Path) -> str:
    if now == epoch:
        return ""
    return (f"this bundle holds epoch {epoch} ({which} when it was exported); the run's {which} is now epoch {now}: "
            f"`workbench export {run_dir}` brings it up to date")


def _exported_and_now(export_dir: Path) -> tuple[int, str, int, Path] | None:
    """(the bundle's epoch, best or last, the run's epoch of that kind now, the run folder), or None
    when there is no readable bundle in a run folder (load_bundle says what is wrong)."""
    import json

    from workbench.core import runs
    from workbench.core.safe_read import NotReadable, read_text

    export_dir = bundle_folder(export_dir)
    run_dir = export_dir.parent
    try:
        meta = json.loads(read_text(export_dir / "model.json", META_LIMIT))
        summary = runs.summarize_run(run_dir) if (run_dir / "run.json").is_file() else None
    except (NotReadable, OSError, ValueError, RecursionError, WorkbenchError):
        return None
    if summary is None or not isinstance(meta, dict):
        return None
    which, epoch = meta.get("checkpoint"), meta.get("epoch")
    now = {"best": summary.best_epoch, "last": summary.epochs_done}.get(which)
    if not isinstance(epoch, int) or not isinstance(now, int):
        return None
    return epoch, which, now, run_dir
