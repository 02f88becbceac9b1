"""Classify image files with an exported bundle, optionally with Monte-Carlo dropout."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn

from workbench.core.catalog import parse_user_arch
from workbench.core.data.folders import decode_image
from workbench.core.data.normalize import normalize
from workbench.core.errors import WorkbenchError
from workbench.core.export.bundle import load_bundle
from workbench.core.models import has_dropout


MOST_PASSES = 10_000  # Monte-Carlo dropout: the spread settles long before; more would run for hours


@dataclass(frozen=True)
class Prediction:
    path: str
    top: list[tuple[str, float, float]]  # (class, mean probability, std over passes)


def load_images(paths: Sequence[str], image_size: int, channels: int, resize: str = "stretch") -> torch.Tensor:
    """uint8 (N, C, H, W) with the same decoding and resizing as training folders."""
    from workbench.core.export.inputs import unreadable_reason

    decoded = []
    for path in paths:
        if why := unreadable_reason(path):
            raise WorkbenchError(f"image {path} {why}")
        try:
            decoded.append(decode_image(Path(path), image_size, channels, resize))
        except (OSError, ValueError) as error:
            raise WorkbenchError(f"cannot read image {path}: {error}") from None
    return torch.stack(decoded)


def probabilities(model: nn.Module, images: torch.Tensor, passes: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) of class probabilities over `passes` stochastic passes (0 = one plain pass).

    Monte-Carlo dropout switches only the dropout layers to train mode; BatchNorm keeps its
    running statistics, so the spread comes from dropout alone.
    """
    model.eval()
    if passes and not has_dropout(model):
        raise WorkbenchError("Monte-Carlo dropout does not apply: this model has no dropout layers", field="mc_dropout")
    dropouts = [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
    try:
        for layer in dropouts if passes else []:
            layer.train()
        with torch.inference_mode():
            runs = torch.stack([model(images).softmax(dim=1) for _ in range(max(passes, 1))])
    finally:
        model.eval()
    std = runs.std(dim=0, unbiased=False) if runs.shape[0] > 1 else torch.zeros_like(runs[0])
    return runs.mean(dim=0), std


@dataclass
class Predicted:
    """What a predict call produced: a prediction per readable image, and each input it skipped."""

    results: list[Prediction]
    skipped: list[tuple[str, str]]  # (path or pattern, why)
    format: str = "safetensors"


BATCH = 256  # images per forward pass: a folder of 100,000 photos never sits on the device at once


def predict_files(
    export_dir: Path, paths: Sequence[str], *, top: int = 5, mc_dropout: int = 0, device: str = "cpu",
    trust_code: bool = False, model_format: str = "safetensors",
) -> Predicted:
    """Classify files, folders and globs with the bundle; an unreadable file is skipped with its
    reason. `trust_code`: the bundle's own network file may run (see load_bundle); pt2 and onnx
    run their saved graphs and need none."""
    from workbench.core.export.inputs import image_paths, unreadable_reason
    from workbench.core.export.loading import bundle_folder, read_bundle_meta
    from workbench.core.export.runtimes import FORMATS, format_runner
    from workbench.core.training.device import pick_device

    if not 0 <= mc_dropout <= MOST_PASSES:
        raise WorkbenchError(f"--mc-dropout: must be 0 (off) or a number of passes up to {MOST_PASSES:,}")
    if top < 1:
        raise WorkbenchError("--top: must be at least 1")
    if model_format not in FORMATS:
        raise WorkbenchError(f"--format: {model_format!r} is not one of {', '.join(FORMATS)}")
    if mc_dropout and model_format != "safetensors":
        raise WorkbenchError("--mc-dropout needs the bundle's network (--format safetensors): "
                             "the pt2 and onnx files run dropout off")
    export_dir = bundle_folder(export_dir)
    target, _ = pick_device(device)  # a device that is not there is a sentence, not a traceback
    if model_format == "safetensors":
        model, meta = load_bundle(export_dir, trust_code)
        model = model.to(target)
        run = lambda batch: probabilities(model, batch.to(target), mc_dropout)  # noqa: E731
    else:
        meta = read_bundle_meta(export_dir)
        logits_of = format_runner(model_format, export_dir)

        def run(batch):
            with torch.inference_mode():
                probs = logits_of(batch).float().softmax(dim=1)
            return probs, torch.zeros_like(probs)
    files, skipped = image_paths(paths)
    prep = meta["preprocessing"]
    results: list[Prediction] = []
    classes = meta["classes"]
    for start in range(0, len(files), BATCH):
        chunk, decoded = [], []
        for path in files[start:start + BATCH]:
            why = unreadable_reason(path)
            if not why:
                try:
                    decoded.append(decode_image(Path(path), meta["image_size"], meta["in_channels"],
                                                prep.get("resize_mode", "stretch")))
                    chunk.append(path)
                    continue
                except (OSError, ValueError) as error:
                    text = str(error).splitlines()[0][:200] if str(error) else ""
                    why = "cannot be read as an image (" + (
                        "not an image Pillow can read" if "cannot identify image file" in text or not text else text) + ")"
            skipped.append((path, why))
        if not chunk:
            continue
        batch = normalize(torch.stack(decoded), prep["mean"], prep["std"])
        try:
            mean, std = run(batch)
        except (Exception, SystemExit) as error:
            raise _network_failure(error, meta, export_dir, len(chunk)) from None
        mean, std = mean.cpu(), std.cpu()
        for row, path in enumerate(chunk):
            order = mean[row].argsort(descending=True)[: min(top, len(classes))]
            results.append(Prediction(path, [(classes[i], float(mean[row, i]), float(std[row, i])) for i in order.tolist()]))
    if not results:
        said = "; ".join(f"{shown_path} {why}" for shown_path, why in skipped[:3]) or "no image was given"
        raise WorkbenchError(f"no image could be classified: {said}" + (f" (and {len(skipped) - 3} more)" if len(skipped) > 3 else ""))
    return Predicted(results, skipped, model_format)


def _network_failure(error: BaseException, meta: dict, export_dir: Path, count: int) -> BaseException:
    """A failure in a user's network file names the file; anything else is raised as it was."""
    user_file = parse_user_arch(meta["arch"])
    if user_file is None or isinstance(error, WorkbenchError):
        return error
    from workbench.core.models.user_file import failure_in

    images = f"{count} image{'s' if count != 1 else ''}"
    return failure_in(str(Path(export_dir) / "network" / Path(user_file[0]).name), error, f"on a batch of {images}")


def as_csv(predicted: Predicted, spread: bool = False) -> str:
    """One row per image and ranked class: path, rank, class, probability (and with Monte-Carlo
    dropout, `spread`: the std over passes)."""
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["path", "rank", "class", "probability", *(["spread"] if spread else [])])
    for result in predicted.results:
        for rank, (name, prob, std) in enumerate(result.top, 1):
            writer.writerow([result.path, rank, name, f"{prob:.6f}", *([f"{std:.6f}"] if spread else [])])
    return out.getvalue()


def as_json(predicted: Predicted) -> str:
    import json

    return json.dumps({
        "format": predicted.format,
        "predictions": [{"path": result.path, "top": [{"class": name, "probability": prob, "spread": spread}
                                                       for name, prob, spread in result.top]}
                        for result in predicted.results],
        "skipped": [{"path": path, "reason": why} for path, why in predicted.skipped],
    }, indent=2) + "\n"
