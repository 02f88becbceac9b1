"""Work the inspection screen runs in thread workers: load a run, drill into a cell, predict. No UI here.

torch is imported inside the functions (through workbench.core), so importing the screen stays
fast; everything handed back to the UI is plain Python data, ready to format.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.core.errors import WorkbenchError
from workbench.ui import workers

if TYPE_CHECKING:
    from workbench.core.inspection.review import Review
    from workbench.core.metrics import ClassReport
    from workbench.core.inspection.summary import DatasetSummary, LayerRow

TOP = 5  # classes listed for a prediction


@dataclass(frozen=True)
class Inspection:
    """A loaded run, as plain data for the tables, plus the Review the later workers need."""

    run_dir: Path
    review: Review
    arch: str
    classes: list[str]
    confusion: list[list[int]]  # [true][predicted] test image counts
    layers: list[LayerRow]
    total_params: int
    data: DatasetSummary
    mean: tuple[float, ...]  # normalisation the run trained with, from run.json
    std: tuple[float, ...]
    resize: str = "stretch"  # how the run made its images square; predict does the same

    @property
    def scores(self) -> list[ClassReport]:
        """Per-class recall, precision and F1: the metrics every other view uses (core/metrics.py)."""
        from workbench.core.metrics import class_reports

        return class_reports(self.confusion, self.classes)


@dataclass(frozen=True)
class Guess:
    name: str
    probability: float  # mean over the passes
    spread: float  # standard deviation over the passes; 0 without Monte-Carlo dropout


def load_inspection(run_dir: Path) -> Inspection:
    """Rebuild the run's best model, predict its test split and describe model and data."""
    from workbench.core import runs
    from workbench.core.inspection.review import load_review
    from workbench.core.inspection.summary import dataset_summary

    review = load_review(run_dir)
    info = runs.read_run_info(run_dir)
    data = dataset_summary(review.data)
    return Inspection(
        run_dir=run_dir,
        review=review,
        arch=str(info.get("arch") or type(review.model).__name__),
        classes=list(info.get("classes") or review.classes),
        confusion=review.confusion().tolist(),
        layers=review.layers(),
        total_params=sum(p.numel() for p in review.model.parameters()),
        data=data,
        mean=tuple(info.get("mean") or data.mean),
        std=tuple(info.get("std") or data.std),
        resize=str(info.get("resize") or "stretch"),
    )


def write_cell(inspection: Inspection, true_class: int, predicted_class: int) -> workers.DecodedImage | None:
    """Write confusion_<true>_as_<pred>.png and decode it for the preview; None for an empty cell."""
    path = inspection.review.write_cell(true_class, predicted_class)
    return workers.decode_png(path) if path is not None else None


def write_samples(inspection: Inspection) -> workers.DecodedImage:
    """Write images/samples.png (raw training images, one row per class) and decode it."""
    from workbench.core.inspection.summary import save_sample_grid

    path = inspection.run_dir / "images" / "samples.png"
    return workers.decode_png(save_sample_grid(path, inspection.review.data))


def parse_passes(text: str) -> int:
    try:
        passes = int(text.strip() or "0")
    except ValueError:
        passes = -1
    if passes < 0:
        raise WorkbenchError(f"passes must be 0 (off) or a number of Monte-Carlo dropout passes, not {text!r}")
    return passes


def image_path(text: str) -> Path:
    """The path as typed or pasted: surrounding quotes (from drag and drop) and ~ are handled."""
    cleaned = text.strip().strip("'\"").strip()
    if not cleaned:
        raise WorkbenchError("type the path of an image file, then press enter")
    return Path(cleaned).expanduser()


def predict_image(
    inspection: Inspection, path: Path, passes: int, top: int = TOP
) -> tuple[list[Guess], workers.DecodedImage]:
    """The `top` most likely classes for one image file, with the run's best model, and the
    image exactly as the model received it (decoded, resized, before normalisation)."""
    from workbench.core.data.normalize import normalize
    from workbench.core.export.predict import load_images, probabilities

    data = inspection.data
    images = load_images([str(path)], data.image_size, data.channels, inspection.resize)
    batch = normalize(images, inspection.mean, inspection.std)
    mean, std = probabilities(inspection.review.model, batch, passes)
    order = mean[0].argsort(descending=True)[: min(top, len(inspection.classes))].tolist()
    guesses = [Guess(inspection.classes[i], float(mean[0, i]), float(std[0, i])) for i in order]
    pixels = images[0].expand(3, -1, -1) if images.shape[1] == 1 else images[0]
    seen = workers.DecodedImage(path, pixels.shape[2], pixels.shape[1], pixels.permute(1, 2, 0).contiguous().numpy().tobytes())
    return guesses, seen


def reason(error: BaseException) -> str:
    """One line for the screen: a WorkbenchError's own sentence, else the exception's name and text."""
    text = str(error) if isinstance(error, WorkbenchError) else f"{type(error).__name__}: {error}"
    return text.splitlines()[0] if text else type(error).__name__


def describe(value: Any) -> str:
    """An output shape such as (8, 28, 28) as 8×28×28."""
    return "×".join(str(n) for n in value) if value else "-"
