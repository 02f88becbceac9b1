"""Classify image files with an exported bundle, optionally with Monte-Carlo dropout."""

from __future__ import annotations

import os
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
from workbench.core.safe_read import is_regular


MOST_PASSES = 10_000  # Monte-Carlo dropout: the spread settles long before; more would run for hours


@dataclass(frozen=True)
class Prediction:
    path: str
    top: list[tuple[str, float, float]]  # (class, mean probability, std over passes)


def load_images(paths: Sequence[str], image_size: int, channels: int, resize: str = "stretch") -> torch.Tensor:
    """uint8 (N, C, H, W) with the same decoding and resizing as training folders."""
    decoded = []
    for path in paths:
        if not os.path.lexists(path):
            raise WorkbenchError(f"image {path} does not exist")
        if not is_regular(path):
            raise WorkbenchError(f"image {path} is not a regular file (a folder, a pipe or a device)")
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
        raise WorkbenchError("--mc-dropout does not apply: this model has no dropout layers")
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


def predict_files(
    export_dir: Path, paths: Sequence[str], *, top: int = 5, mc_dropout: int = 0, device: str = "cpu",
    trust_code: bool = False,
) -> list[Prediction]:
    """`trust_code`: the bundle's own network file may run (see load_bundle)."""
    model, meta = load_bundle(export_dir, trust_code)
    if not 0 <= mc_dropout <= MOST_PASSES:
        raise WorkbenchError(f"--mc-dropout: must be 0 (off) or a number of passes up to {MOST_PASSES:,}")
    if top < 1:
        raise WorkbenchError("--top: must be at least 1")
    images = load_images(paths, meta["image_size"], meta["in_channels"], meta["preprocessing"].get("resize_mode", "stretch"))
    prep = meta["preprocessing"]
    batch = normalize(images, prep["mean"], prep["std"])
    from workbench.core.training.device import pick_device

    target, _ = pick_device(device)  # a device that is not there is a sentence, not a traceback
    model = model.to(target)
    try:
        mean, std = probabilities(model, batch.to(target), mc_dropout)
    except (Exception, SystemExit) as error:
        user_file = parse_user_arch(meta["arch"])
        if user_file is None or isinstance(error, WorkbenchError):
            raise
        from workbench.core.models.user_file import failure_in

        bundle = Path(export_dir)
        bundle = bundle / "export" if (bundle / "export" / "model.json").is_file() else bundle  # as load_bundle
        count = f"{len(paths)} image{'s' if len(paths) != 1 else ''}"
        raise failure_in(str(bundle / "network" / Path(user_file[0]).name), error, f"on a batch of {count}") from None
    mean, std = mean.cpu(), std.cpu()
    classes = meta["classes"]
    results = []
    for row, path in enumerate(paths):
        order = mean[row].argsort(descending=True)[: min(top, len(classes))]
        results.append(
            Prediction(path, [(classes[i], float(mean[row, i]), float(std[row, i])) for i in order.tolist()])
        )
    return results
