"""Export a run's model as a bundle that loads without pickle, written as a whole.

The bundle in `<run>/export/`:
    model.safetensors   weights (safetensors: tensors only, nothing executable)
    model.json          architecture, input shape, class names, preprocessing, accuracy, config
    model.pt2           torch.export program (optional)
    model.onnx          ONNX graph from the dynamo exporter (optional extra: onnx, onnxscript)

What every requested format needs is checked before a byte is written; the files are written
into a new folder beside `export/`, which then takes its place, so a bundle never mixes two
exports (a stale model.onnx beside newer weights, say) and a failed export leaves the old one.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from workbench.core import checkpoint as ckpt
from workbench.core import network_copy, runs
from workbench.core.atomic import (
    current_umask,
    disk_error,
    fsync_dir,
    write_json_atomic,
)
from workbench.core.catalog import ARCHITECTURES, parse_user_arch
from workbench.core.errors import ConfigError, WorkbenchError
from workbench.core.models import with_weights
from workbench.core.training.keeper import epoch_file, kept_epochs

FORMATS = ("safetensors", "pt2", "onnx")
BUNDLE_VERSION = 2
EXPORT_DIR = "export"


def parse_formats(text: str) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(part.strip().lower() for part in text.split(",") if part.strip()))
    for name in chosen:
        if name not in FORMATS:
            raise ConfigError("format", f"{name!r} is not one of {', '.join(FORMATS)}")
    if not chosen:
        raise ConfigError("format", f"give at least one of {', '.join(FORMATS)}")
    return chosen


def check_formats(formats: tuple[str, ...], verify: bool = False) -> None:
    """Refuse, before anything is written, a format whose libraries are missing (and, when the
    export is to be verified, the runtime that verifies it)."""
    if "onnx" in formats and verify:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise WorkbenchError(
                "verifying ONNX needs onnxruntime, part of the extra: pip install 'workbench[onnx]'; nothing was exported"
            ) from None
    if "onnx" in formats:
        try:
            import onnx  # noqa: F401
            import onnxscript  # noqa: F401
        except ImportError:
            raise WorkbenchError(
                "ONNX export needs the optional extra: pip install 'workbench[onnx]' "
                "(onnx, onnxscript, onnxruntime); nothing was exported"
            ) from None


def checkpoint_for(run_dir: Path, which: str = "best") -> tuple[Path, str]:
    """(checkpoint path, how it was chosen) for `which` = best | last | epoch-N (one the run kept
    with --keep-best). A run without a validation split has no best.pt: its last checkpoint is the
    model, and the sentence says so."""
    folder = run_dir / "checkpoints"
    if which == "best" and (folder / ckpt.BEST).is_file():
        return folder / ckpt.BEST, "best validation accuracy"
    if which.startswith("epoch-") and which[6:].isdigit():
        path = folder / epoch_file(int(which[6:]))
        if path.is_file():
            return path, f"epoch {int(which[6:])}, one of the best epochs kept"
        kept = ", ".join(f"epoch-{e}" for e in kept_epochs(folder)) or "none (train with --keep-best K)"
        raise ConfigError("checkpoint", f"{run_dir.name} kept no checkpoint of {which}; kept: {kept}")
    if which not in ("best", "last"):
        raise ConfigError("checkpoint", f"{which!r} is not best, last or epoch-N")
    chosen = "the last epoch" if which == "last" else "the last epoch (this run selected no best epoch)"
    return folder / ckpt.LAST, chosen


def model_from_checkpoint(run_dir: Path, which: str = "best") -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
    """(model in eval mode on the CPU, checkpoint state, run info) for a run folder."""
    path, _ = checkpoint_for(run_dir, which)
    if path.exists():
        state = ckpt.load_checkpoint(path)
    else:
        state, path, _ = ckpt.load_latest(run_dir / "checkpoints")
    info = runs.read_run_info(run_dir)
    needed = ("arch", "channels", "classes", "image_size", "mean", "std")
    if not info or any(key not in info for key in needed):
        raise WorkbenchError(f"{run_dir}/run.json is missing or damaged; this run cannot be exported")
    options = state.get("model_options") or info.get("model_options") or {}
    try:  # built without random draws: a run may be training in another thread of this process
        model = with_weights(network_copy.arch_in(run_dir, info["arch"]), info["channels"], len(info["classes"]),
                             info["image_size"], state["model"], **options)
    except RuntimeError as error:
        raise WorkbenchError(f"{path} does not fit the architecture in run.json ({_first_line(error)})") from None
    return model.eval(), state, info


def export_run(
    run_dir: Path,
    formats: tuple[str, ...] = ("safetensors",),
    *,
    which: str = "best",
    log: Callable[[str], None] = lambda message: None,
    verify: bool = False,
) -> ExportedFiles:
    """Write the bundle; model.safetensors and model.json are always written. Returns its files.

    Exports of one run take turns (a lock on the run's .export.lock), so one never removes
    another's half-written folder. `verify` says the caller will verify it (its needs are checked first).
    """
    check_formats(formats, verify)
    if not os.access(run_dir, os.W_OK):
        raise WorkbenchError(f"cannot write to {run_dir} (read-only?); an export is written inside the run folder")
    with _export_lock(run_dir):
        return _export(run_dir, formats, which, log)


@contextlib.contextmanager
def _export_lock(run_dir: Path):
    """Held on the run's checkpoints/ folder (which training never locks): creates nothing."""
    try:
        descriptor = os.open(run_dir / "checkpoints", os.O_RDONLY)
    except OSError:
        raise WorkbenchError(f"{run_dir} has no checkpoints folder; it did not get far enough to export") from None
    try:
        try:
            import fcntl

            fcntl.flock(descriptor, fcntl.LOCK_EX)  # waits for another export of this run
        except ImportError:  # pragma: no cover - Windows
            pass
        yield
    finally:
        os.close(descriptor)


def _export(run_dir: Path, formats: tuple[str, ...], which: str, log) -> list[Path]:
    path, chosen = checkpoint_for(run_dir, which)
    model, state, info = model_from_checkpoint(run_dir, which)
    log(f"exporting {path.name}: the model of {chosen}")
    metadata = bundle_metadata(model, state, info, which, chosen)
    for leftover in [*run_dir.glob(".export-new-*"), *run_dir.glob(".export-old-*")]:
        shutil.rmtree(leftover, ignore_errors=True)  # an export killed half way
    try:
        staging = Path(tempfile.mkdtemp(dir=run_dir, prefix=".export-new-"))
    except OSError as error:
        raise disk_error(error, run_dir / EXPORT_DIR) from None
    try:
        metadata["network_file"] = network_copy.copy_between(run_dir, staging)  # None for a built-in
        names = _write_bundle(staging, model, metadata, formats, log)
        _swap_in(staging, run_dir / EXPORT_DIR)
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise disk_error(error, run_dir / EXPORT_DIR / "model.safetensors") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if metadata["network_file"]:
        names += [f"{network_copy.NETWORK_DIR}/{metadata['network_file']['file']}"]
    return ExportedFiles([run_dir / EXPORT_DIR / name for name in names], model)


class ExportedFiles(list):
    """The bundle's files, and the model they were written from: verification compares against
    this model, never a second read of the checkpoint, which a training run may replace meanwhile."""

    def __init__(self, paths: list[Path], model: nn.Module) -> None:
        super().__init__(paths)
        self.model = model


def bundle_metadata(model: nn.Module, state: dict, info: dict, which: str, chosen: str) -> dict[str, Any]:
    history = state.get("history", [])
    progress = state["progress"]
    last = history[-1] if history else {}
    return {
        "format_version": BUNDLE_VERSION,
        "arch": info["arch"],
        "model_options": state.get("model_options") or info.get("model_options") or {},
        "in_channels": info["channels"],
        "image_size": info["image_size"],
        "num_classes": len(info["classes"]),
        "classes": info["classes"],
        "preprocessing": {
            "resize": f"{info['image_size']}x{info['image_size']} bicubic, {info.get('resize', 'stretch')}",
            "resize_mode": info.get("resize", "stretch"),  # stretch, crop (centre) or pad
            "color": "L" if info["channels"] == 1 else "RGB",
            "scale": "pixel / 255",
            "mean": info["mean"],
            "std": info["std"],
            "formula": "(pixel / 255 - mean) / std per channel",
        },
        "output": "logits (apply softmax for probabilities)",
        "checkpoint": which,
        "chosen_by": chosen,
        "epoch": progress["epoch"],
        "val_acc": last.get("val_acc"),
        "test_acc": last.get("test_acc"),  # None when the exported epoch was not tested
        "best_epoch": progress.get("best_epoch"),
        "best_val_acc": progress.get("best_val_acc"),
        "params": sum(p.numel() for p in model.parameters()),
        "dataset": info.get("dataset"),
        "recipe": info.get("recipe", {}).get("name", "standard"),
        "config": state.get("config", {}),
    }


def _write_bundle(folder: Path, model: nn.Module, metadata: dict, formats, log) -> list[str]:
    from safetensors.torch import save_file

    weights = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
    save_file(weights, str(folder / "model.safetensors"), metadata={"arch": metadata["arch"]})
    write_json_atomic(folder / "model.json", metadata)
    names = ["model.safetensors", "model.json"]
    example = torch.zeros(2, metadata["in_channels"], metadata["image_size"], metadata["image_size"])
    if "pt2" in formats:
        batch = torch.export.Dim("batch", min=1, max=4096)
        program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
        torch.export.save(program, str(folder / "model.pt2"))
        names.append("model.pt2")
        log("wrote model.pt2")
    if "onnx" in formats:
        batch = torch.export.Dim("batch", min=1, max=4096)
        program = torch.onnx.export(
            model, (example,), dynamo=True, dynamic_shapes=({0: batch},),
            input_names=["images"], output_names=["logits"], verbose=False,
        )
        program.save(str(folder / "model.onnx"))
        names.append("model.onnx")
        log("wrote model.onnx")
    mask = current_umask()
    for name in names:
        os.chmod(folder / name, 0o666 & ~mask)  # the user's umask, as for every file a run writes
    return names


def _swap_in(staging: Path, target: Path) -> None:
    """Put the new bundle folder where the old one was: two renames, the old removed last."""
    os.chmod(staging, 0o777 & ~current_umask())  # mkdtemp makes 0700
    retired = None
    if target.exists():
        retired = Path(tempfile.mkdtemp(dir=target.parent, prefix=".export-old-"))
        os.replace(target, retired / EXPORT_DIR)
    os.replace(staging, target)
    fsync_dir(target.parent)
    if retired is not None:
        shutil.rmtree(retired, ignore_errors=True)


# ---- loading a bundle -------------------------------------------------------------------------


def load_bundle(export_dir: Path, trust_code: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model from model.json + model.safetensors alone (no pickle); a damaged or
    hand-edited bundle is refused with one sentence. A bundle of a user's own network holds its
    Python file (network/), which runs only when `trust_code` says the caller trusts its maker."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    export_dir = Path(export_dir)
    if (export_dir / EXPORT_DIR / "model.json").is_file():
        export_dir = export_dir / EXPORT_DIR
    meta_path, weights_path = export_dir / "model.json", export_dir / "model.safetensors"
    if not meta_path.is_file() or not weights_path.is_file():
        raise WorkbenchError(
            f"{export_dir} is not an export folder (needs model.json and model.safetensors); "
            "run `workbench export RUN` first"
        )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as error:
        raise WorkbenchError(f"{meta_path} is not readable JSON ({_first_line(error)}); export the run again") from None
    problem = _bundle_problem(meta)
    if problem:
        raise WorkbenchError(f"{meta_path} is damaged: {problem}; export the run again")
    arch = _bundle_arch(export_dir, meta, trust_code)
    try:
        weights = load_file(str(weights_path))
        model = with_weights(arch, meta["in_channels"], meta["num_classes"], meta["image_size"],
                             weights, **(meta.get("model_options") or {}))
    except (RuntimeError, OSError, SafetensorError, ValueError, TypeError) as error:
        raise WorkbenchError(
            f"the weights in {weights_path} do not fit model.json ({_first_line(error)}); export the run again"
        ) from None
    if not all(bool(t.isfinite().all()) for t in weights.values() if t.is_floating_point()):
        raise WorkbenchError(f"the weights in {weights_path} are not all finite (NaN or infinite); export the run again")
    return model.eval(), meta


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
            "you trust who made this bundle (model.pt2 and model.onnx need no code)")
    return network_copy.arch_in(export_dir, meta["arch"])


def _bundle_problem(meta: Any) -> str:
    """What makes model.json unusable, or "" when it is sound."""
    if not isinstance(meta, dict):
        return "it is not a JSON object"
    if not isinstance(meta.get("arch"), str) or (meta["arch"] not in ARCHITECTURES and not parse_user_arch(meta["arch"])):
        return f"arch {meta.get('arch')!r} is not an architecture"
    for key in ("in_channels", "image_size", "num_classes"):
        if not isinstance(meta.get(key), int) or isinstance(meta.get(key), bool) or meta[key] < 1:
            return f"{key} must be a positive whole number, not {meta.get(key)!r}"
    if meta["in_channels"] not in (1, 3):
        return f"in_channels must be 1 or 3, not {meta['in_channels']}"
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
    if prep.get("resize_mode", "stretch") not in ("stretch", "crop", "pad"):
        return f"preprocessing resize_mode must be stretch, crop or pad, not {prep.get('resize_mode')!r}"
    if not isinstance(meta.get("model_options", {}), dict):
        return "model_options must be an object"
    return ""


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:200]
