"""Export a run's model as a bundle that loads without pickle, and verify every format.

The bundle in `<run>/export/`:
    model.safetensors   weights (safetensors: tensors only, nothing executable)
    model.json          architecture, input shape, class names, preprocessing, accuracy, config
    model.pt2           torch.export program (optional)
    model.onnx          ONNX graph from the dynamo exporter (optional extra: onnx, onnxscript)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from workbench.core import checkpoint as ckpt
from workbench.core import runs
from workbench.core.errors import WorkbenchError
from workbench.core.models import create

FORMATS = ("safetensors", "pt2", "onnx")
TOLERANCE = 1e-4  # max |logit difference| accepted between the run's model and an export (fp32)
BUNDLE_VERSION = 1


@dataclass(frozen=True)
class Verification:
    format: str
    max_abs_diff: float
    passed: bool


def parse_formats(text: str) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(part.strip().lower() for part in text.split(",") if part.strip()))
    for name in chosen:
        if name not in FORMATS:
            raise WorkbenchError(f"--format: {name!r} is not one of {', '.join(FORMATS)}")
    if not chosen:
        raise WorkbenchError(f"--format: give at least one of {', '.join(FORMATS)}")
    return chosen


def model_from_checkpoint(run_dir: Path, which: str = "best") -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
    """(model in eval mode on the CPU, checkpoint state, run info) for a run folder."""
    folder = run_dir / "checkpoints"
    path = folder / (ckpt.BEST if which == "best" else ckpt.LAST)
    if path.exists():
        state = ckpt.load_checkpoint(path)
    else:
        state, path, _ = ckpt.load_latest(folder)
    info = runs.read_run_info(run_dir)
    if not info:
        raise WorkbenchError(f"{run_dir} has no run.json; it did not get far enough to export")
    model = create(info["arch"], info["channels"], len(info["classes"]), info["image_size"])
    model.load_state_dict(state["model"])
    return model.eval(), state, info


def export_run(
    run_dir: Path,
    formats: tuple[str, ...] = ("safetensors",),
    *,
    which: str = "best",
    log: Callable[[str], None] = lambda message: None,
) -> list[Path]:
    """Write the bundle; model.safetensors and model.json are always written."""
    from safetensors.torch import save_file

    model, state, info = model_from_checkpoint(run_dir, which)
    out = run_dir / "export"
    out.mkdir(exist_ok=True)
    history = state.get("history", [])
    metadata = {
        "format_version": BUNDLE_VERSION,
        "arch": info["arch"],
        "in_channels": info["channels"],
        "image_size": info["image_size"],
        "num_classes": len(info["classes"]),
        "classes": info["classes"],
        "preprocessing": {
            "resize": f"{info['image_size']}x{info['image_size']} bicubic",
            "color": "L" if info["channels"] == 1 else "RGB",
            "scale": "pixel / 255",
            "mean": info["mean"],
            "std": info["std"],
            "formula": "(pixel / 255 - mean) / std per channel",
        },
        "output": "logits (apply softmax for probabilities)",
        "checkpoint": which,
        "epoch": state["progress"]["epoch"],
        "test_acc": history[-1]["test_acc"] if history else None,
        "best_acc": state["progress"]["best_acc"],
        "params": sum(p.numel() for p in model.parameters()),
        "dataset": info.get("dataset"),
        "config": state.get("config", {}),
    }
    written = []
    weights = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
    save_file(weights, str(out / "model.safetensors"), metadata={"arch": info["arch"]})
    written.append(out / "model.safetensors")
    runs.write_text_atomic(out / "model.json", json.dumps(metadata, indent=2) + "\n")
    written.append(out / "model.json")
    example = torch.zeros(2, info["channels"], info["image_size"], info["image_size"])
    if "pt2" in formats:
        written.append(_export_pt2(model, example, out / "model.pt2"))
        log(f"wrote {out / 'model.pt2'}")
    if "onnx" in formats:
        written.append(_export_onnx(model, example, out / "model.onnx"))
        log(f"wrote {out / 'model.onnx'}")
    return written


def _export_pt2(model: nn.Module, example: torch.Tensor, path: Path) -> Path:
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path))
    return path


def _export_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> Path:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise WorkbenchError(
            "ONNX export needs the optional extra: pip install 'workbench[onnx]' "
            "(onnx, onnxscript, onnxruntime)"
        ) from None
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.onnx.export(
        model, (example,), dynamo=True, dynamic_shapes=({0: batch},),
        input_names=["images"], output_names=["logits"], verbose=False,
    )
    program.save(str(path))
    return path


def load_bundle(export_dir: Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model from model.json + model.safetensors alone (no pickle)."""
    from safetensors.torch import load_file

    export_dir = Path(export_dir)
    if (export_dir / "export" / "model.json").is_file():
        export_dir = export_dir / "export"
    meta_path, weights_path = export_dir / "model.json", export_dir / "model.safetensors"
    if not meta_path.is_file() or not weights_path.is_file():
        raise WorkbenchError(
            f"{export_dir} is not an export folder (needs model.json and model.safetensors); "
            "run `workbench export RUN` first"
        )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        model = create(meta["arch"], meta["in_channels"], meta["num_classes"], meta["image_size"])
        model.load_state_dict(load_file(str(weights_path)))
    except (ValueError, KeyError, RuntimeError, OSError) as error:
        raise WorkbenchError(f"cannot load the model in {export_dir}: {error}") from None
    return model.eval(), meta


def verify_export(
    reference: nn.Module, export_dir: Path, formats: tuple[str, ...], batch: torch.Tensor
) -> list[Verification]:
    """Max |logit difference| between the run's model and each exported format on `batch`."""
    with torch.inference_mode():
        expected = reference.eval()(batch)
    results = []
    for name in formats:
        actual = _run_format(name, export_dir, batch)
        diff = float((actual - expected).abs().max())
        results.append(Verification(name, diff, diff <= TOLERANCE))
    return results


def _run_format(name: str, export_dir: Path, batch: torch.Tensor) -> torch.Tensor:
    if name == "safetensors":
        model, _ = load_bundle(export_dir)
        with torch.inference_mode():
            return model(batch)
    if name == "pt2":
        program = torch.export.load(str(export_dir / "model.pt2"))
        with torch.inference_mode():
            return program.module()(batch)
    if name == "onnx":
        try:
            import onnxruntime
        except ImportError:
            raise WorkbenchError("verifying ONNX needs onnxruntime: pip install 'workbench[onnx]'") from None
        session = onnxruntime.InferenceSession(
            str(export_dir / "model.onnx"), providers=["CPUExecutionProvider"]
        )
        input_name = session.get_inputs()[0].name
        (logits,) = session.run(None, {input_name: batch.numpy()})
        return torch.from_numpy(logits)
    raise ValueError(name)


def held_out_batch(run_dir: Path, size: int = 64) -> tuple[torch.Tensor, str]:
    """Normalised test images of the run's own data set, or seeded noise when it is gone."""
    from workbench.core.data import load_dataset
    from workbench.core.inspect import normalize

    info = runs.read_run_info(run_dir)
    try:
        config = runs.read_config(run_dir)
        data = load_dataset(
            config.dataset, data_dir=config.resolved_data_dir(), image_size=info["image_size"],
            seed=config.seed, val_fraction=config.val_fraction, download=False,
        )
        images = data.test.images[:size]
        return normalize(images, info["mean"], info["std"]), f"{len(images)} test images"
    except WorkbenchError:
        generator = torch.Generator().manual_seed(0)
        shape = (size, info["channels"], info["image_size"], info["image_size"])
        return torch.randn(shape, generator=generator), f"{size} random inputs (data set unavailable)"


def verify_run_export(run_dir: Path, formats: tuple[str, ...], *, which: str = "best") -> tuple[list[Verification], str]:
    model, _, _ = model_from_checkpoint(run_dir, which)
    batch, description = held_out_batch(run_dir)
    return verify_export(model, run_dir / "export", formats, batch), description
