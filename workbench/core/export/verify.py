"""Verify an export: every format's logits against the run's own model on held-out images."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from workbench.core import runs
from workbench.core.errors import WorkbenchError
from workbench.core.export.bundle import EXPORT_DIR, model_from_checkpoint

TOLERANCE = 1e-4  # max |logit difference| accepted between the run's model and an export (fp32)


@dataclass(frozen=True)
class Verification:
    format: str
    max_abs_diff: float
    passed: bool


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
    from workbench.core.export.runtimes import format_runner

    logits_of = format_runner(name, export_dir, trust_code=True)  # the bundle export just wrote from its run
    with torch.inference_mode():
        return logits_of(batch)


def held_out_batch(run_dir: Path, size: int = 64) -> tuple[torch.Tensor, str]:
    """Normalised test images of the run's own data set, or seeded noise when it is gone."""
    from workbench.core.data.load import load_dataset
    from workbench.core.data.normalize import normalize

    info = runs.read_run_info(run_dir)
    try:
        config = runs.read_config(run_dir)
        data = load_dataset(
            config.dataset, data_dir=config.resolved_data_dir(), image_size=info["image_size"],
            seed=config.seed, test_fraction=config.test_fraction, download=False, resize=config.resize,
        )
        images = data.test.images[:size]
        return normalize(images, info["mean"], info["std"]), f"{len(images)} test images"
    except WorkbenchError:
        generator = torch.Generator().manual_seed(0)
        shape = (size, info["channels"], info["image_size"], info["image_size"])
        return torch.randn(shape, generator=generator), f"{size} random inputs (data set unavailable)"


def verify_run_export(run_dir: Path, formats: tuple[str, ...], *, which: str = "best",
                      reference: nn.Module | None = None) -> tuple[list[Verification], str]:
    """`reference`: the model the export was written from (ExportedFiles.model); without it, the
    checkpoint is read again, which is only right when no run is replacing it."""
    model = reference if reference is not None else model_from_checkpoint(run_dir, which)[0]
    batch, description = held_out_batch(run_dir)
    return verify_export(model, run_dir / EXPORT_DIR, formats, batch), description
