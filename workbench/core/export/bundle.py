"""Export a run's model as a bundle that loads without pickle, written as a whole.

The bundle in `<run>/export/`:
    model.safetensors   weights (safetensors: tensors only, nothing executable)
    model.json          architecture, input shape, class names, preprocessing, accuracy, config
    model.pt2           torch.export program (optional)
    model.onnx          ONNX graph from the dynamo exporter (optional extra: onnx, onnxscript)

What every requested format needs is checked before a byte is written; the files are written
into a new folder beside `export/`, and only when all are complete do they replace the bundle's
own files in `export/` one by one (model.json last), while the bundle's files this export did
not write (a stale model.onnx beside newer weights, say) go first. Anything else in `export/`
is the user's and stays: an export removes or replaces only the names a bundle has.
"""

from __future__ import annotations

import contextlib
import os
import re
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
from workbench.core.export import weights
from workbench.core.export.loading import BUNDLE_VERSION, EXPORT_DIR, _first_line, bundle_problem, load_bundle
from workbench.core.errors import ConfigError, WorkbenchError
from workbench.core.models import with_weights
from workbench.core.training.keeper import epoch_file, kept_epochs

__all__ = ["EXPORT_DIR", "export_run", "load_bundle", "model_from_checkpoint", "parse_formats"]

FORMATS = ("safetensors", "pt2", "onnx")


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
    if which == "best" and os.path.lexists(folder / ckpt.BEST):  # a pipe there is refused when loaded
        return folder / ckpt.BEST, "best validation accuracy"
    if which.startswith("epoch-") and which[6:].isdigit():
        path = folder / epoch_file(int(which[6:]))
        if path.is_file():
            return path, f"epoch {int(which[6:])}, one of the best epochs kept"
        # Every name --checkpoint would take, so best and last are not hidden behind "none".
        names = [name for name, file in (("best", ckpt.BEST), ("last", ckpt.LAST)) if (folder / file).is_file()]
        names += [f"epoch-{e}" for e in kept_epochs(folder)]
        more = "" if len(names) > 2 else " (--keep-best K keeps the K best epochs)"
        raise ConfigError("checkpoint", f"{run_dir.name} kept no checkpoint of {which}; it has: "
                                        f"{', '.join(names) or 'none'}{more}")
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
    problem = bundle_problem(_bundle_fields(info, state))  # what model.json would say, judged as predict will
    if problem:
        raise WorkbenchError(f"{run_dir}/run.json cannot make a bundle: {problem}; nothing was written")
    options = state.get("model_options") or info.get("model_options") or {}
    try:  # built without random draws: a run may be training in another thread of this process
        model = with_weights(network_copy.arch_in(run_dir, info["arch"]), info["channels"], len(info["classes"]),
                             info["image_size"], state["model"], **options)
    except RuntimeError as error:
        raise WorkbenchError(f"{path} does not fit the architecture in run.json ({_first_line(error)})") from None
    return model.eval(), state, info


def _bundle_fields(info: dict, state: dict) -> dict[str, Any]:
    """The fields of model.json that come from run.json and the checkpoint, before a model exists."""
    classes = info["classes"]
    return {"arch": info["arch"], "in_channels": info["channels"], "image_size": info["image_size"],
            "num_classes": len(classes) if isinstance(classes, list) else None, "classes": classes,
            "model_options": state.get("model_options") or info.get("model_options") or {},
            "preprocessing": {"mean": info["mean"], "std": info["std"], "resize_mode": info.get("resize", "stretch")}}


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
    progress = state.get("progress") or {}
    if path.name == ckpt.LAST and progress.get("epoch_step"):  # stopped inside an epoch: not an epoch's model
        chosen = (f"step {progress['epoch_step']} of epoch {progress['epoch'] + 1}, where the run stopped "
                  "(that epoch did not finish)")
    log(f"exporting {path.name}: the model of {chosen}")
    metadata = bundle_metadata(model, state, info, which, chosen)
    data, extra = weights.pack(model, {"arch": metadata["arch"]})  # refuses what it cannot hold, in memory
    if extra:
        metadata[weights.EXTRA_STATE_KEY] = extra
    for leftover in run_dir.glob(".export-new-*"):  # an export killed half way: only mkdtemp's own names
        if re.fullmatch(r"\.export-new-[a-z0-9_]{8}", leftover.name) and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
    try:
        staging = Path(tempfile.mkdtemp(dir=run_dir, prefix=".export-new-"))
    except OSError as error:
        raise disk_error(error, run_dir / EXPORT_DIR) from None
    try:
        metadata["network_file"] = network_copy.copy_between(run_dir, staging)  # None for a built-in
        names = _write_bundle(staging, model, data, metadata, formats, log)
        _move_in(staging, run_dir / EXPORT_DIR)
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        problem = disk_error(error, run_dir / EXPORT_DIR / "model.safetensors")
        raise (WorkbenchError(f"cannot write the export in {run_dir / EXPORT_DIR} ({error.strerror or error})")
               if isinstance(problem, OSError) else problem) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(staging, ignore_errors=True)
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


def _write_bundle(folder: Path, model: nn.Module, data: bytes, metadata: dict, formats, log) -> list[str]:
    (folder / "model.safetensors").write_bytes(data)
    write_json_atomic(folder / "model.json", metadata)
    names = ["model.safetensors", "model.json"]
    example = torch.zeros(2, metadata["in_channels"], metadata["image_size"], metadata["image_size"])
    if "pt2" in formats:
        with _format_refusal("model.pt2", "torch.export"):
            batch = torch.export.Dim("batch", min=1, max=4096)
            program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
            torch.export.save(program, str(folder / "model.pt2"))
            _load_pt2_once(folder / "model.pt2", example)
        names.append("model.pt2")
        log("wrote model.pt2")
    if "onnx" in formats:
        with _format_refusal("model.onnx", "the ONNX exporter"):
            batch = torch.export.Dim("batch", min=1, max=4096)
            program = torch.onnx.export(
                model, (example,), dynamo=True, dynamic_shapes=({0: batch},),
                input_names=["images"], output_names=["logits"], verbose=False,
            )
            program.save(str(folder / "model.onnx"))
            _run_onnx_once(folder / "model.onnx", example)
        names.append("model.onnx")
        log("wrote model.onnx")
    mask = current_umask()
    for name in names:
        os.chmod(folder / name, 0o666 & ~mask)  # the user's umask, as for every file a run writes
    return names


def _load_pt2_once(path: Path, example: torch.Tensor) -> None:
    """Load the saved program back and run it: torch.export saves some networks (a module named
    "a,b") as a file its own loader cannot read; torch's log of that stays off the terminal."""
    import logging

    logger = logging.getLogger("torch.export")
    was = logger.disabled
    logger.disabled = True
    try:
        torch.export.load(str(path)).module()(example)
    except Exception as error:  # noqa: BLE001 - any failure here means the file is no use to anyone
        cause = error.__cause__ or error
        raise RuntimeError(f"it saved a file it cannot load back: {type(cause).__name__}; module names with "
                           "commas or control characters are one cause") from None
    finally:
        logger.disabled = was


def _run_onnx_once(path: Path, example: torch.Tensor) -> None:
    """Run the saved file once in onnxruntime, when it is installed: an operator it has no kernel
    for (a bfloat16 Gemm) must be refused now, not found by whoever deploys the file."""
    try:
        import onnxruntime
    except ImportError:
        return
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    session.run(None, {session.get_inputs()[0].name: example.numpy()})


@contextlib.contextmanager
def _format_refusal(name: str, exporter: str):
    """A network an exporter cannot trace is one sentence (nothing is in export/ yet)."""
    try:
        yield
    except (OSError, WorkbenchError, KeyboardInterrupt):
        raise
    except Exception as error:  # noqa: BLE001 - exporters raise anything; the user sees which format failed
        raise WorkbenchError(f"{exporter} cannot export this network ({_first_line(error)}); nothing was "
                             f"exported: leave {name.split('.')[1]} out of --format") from None


def bundle_names(record: dict[str, Any] | None) -> list[str]:
    """Every name a bundle may have in export/ (relative paths), given its network record."""
    names = ["model.safetensors", "model.pt2", "model.onnx", "model.json"]
    if record:
        names[-1:-1] = [f"{network_copy.NETWORK_DIR}/{record['file']}", f"{network_copy.NETWORK_DIR}/{network_copy.RECORD}"]
    return names


def _move_in(staging: Path, target: Path) -> None:
    """Replace the bundle's own files in target with the new ones, model.json last; remove the
    bundle's names this export did not write; leave every other file where it is."""
    new = network_copy.record_in(staging)
    fresh = [name for name in bundle_names(new) if (staging / name).is_file()]
    folders = [target, target / network_copy.NETWORK_DIR]
    wrong = [path for path in folders if path.exists() and not path.is_dir()]
    wrong += [target / name for name in fresh if (target / name).is_dir()]
    if wrong:
        raise WorkbenchError(f"{wrong[0]} is in the way of the bundle (a file where a folder belongs, or the "
                             "reverse); move it away, then export again; nothing was exported")
    target.mkdir(mode=0o777 & ~current_umask(), exist_ok=True)
    try:
        old = network_copy.record_in(target)
    except WorkbenchError:
        old = None  # a damaged record: its file is not known, so nothing of it is removed
    for name in bundle_names(old) + bundle_names(None):
        if name not in fresh and os.path.lexists(target / name) and not (target / name).is_dir():
            (target / name).unlink()
    with contextlib.suppress(OSError):
        (target / network_copy.NETWORK_DIR).rmdir()  # only when it is empty: it may hold the user's files
    if new:
        (target / network_copy.NETWORK_DIR).mkdir(mode=0o777 & ~current_umask(), exist_ok=True)
    for name in fresh:
        os.replace(staging / name, target / name)
    fsync_dir(target)
