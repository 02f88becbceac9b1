"""A run's metrics in the formats other tools read: CSV (a notebook, a spreadsheet) and
TensorBoard event files (written by torch.utils.tensorboard, an optional extra).

Both come from the run's metrics.jsonl rows, so a run that is still training exports what it
has so far, and a resumed run exports each epoch once (the rows were repaired at the resume).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from workbench.core import runs
from workbench.core.errors import WorkbenchError

EPOCH_COLUMNS = ("epoch", "global_step", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc",
                 "best_epoch", "best_val_acc", "lr", "images_per_s", "epoch_s", "elapsed_s")
STEP_COLUMNS = ("epoch", "step", "global_step", "loss", "acc", "lr", "images_per_s", "elapsed_s", "gpu_memory_mb")


def _rows(run_dir: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rows = runs.read_metrics(run_dir)
    epochs = runs.epoch_records(rows)
    steps = [row for row in rows if row.get("type") == "step"]
    if not epochs and not steps:
        raise WorkbenchError(f"{run_dir} has no metrics yet (no step or epoch was recorded)")
    return epochs, steps


def metrics_csv(run_dir: Path, steps: bool = False) -> str:
    """One row per epoch (its held-out figures and per-class accuracy), or per step sample."""
    epochs, samples = _rows(run_dir)
    out = io.StringIO()
    if steps:
        writer = csv.DictWriter(out, STEP_COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(samples)
        return out.getvalue()
    classes = list(dict.fromkeys(name for row in epochs for name in (row.get("per_class_acc") or {})))
    columns = [*EPOCH_COLUMNS, *(f"class_acc/{name}" for name in classes)]
    writer = csv.DictWriter(out, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in epochs:
        per_class = row.get("per_class_acc") or {}
        writer.writerow(row | {f"class_acc/{name}": per_class.get(name) for name in classes})
    return out.getvalue()


def write_tensorboard(run_dir: Path, log_dir: Path) -> tuple[Path, int]:
    """The run's curves as TensorBoard scalars in LOG_DIR/RUN_NAME (open with `tensorboard
    --logdir LOG_DIR`), each at its global step; returns the folder and the scalars written."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise WorkbenchError('TensorBoard files need the tensorboard package, an optional extra: '
                             'pip install -e ".[tensorboard]" (or pip install tensorboard)') from None
    epochs, samples = _rows(run_dir)
    folder = Path(log_dir).expanduser() / Path(run_dir).name
    if folder.exists() and any(folder.glob("events.out.tfevents.*")):
        raise WorkbenchError(f"{folder} already holds TensorBoard files of this run; remove it or choose another --tensorboard")
    written = 0
    writer = SummaryWriter(log_dir=str(folder))
    try:
        for row in samples:
            for key, tag in (("loss", "train/loss"), ("acc", "train/accuracy"), ("lr", "train/lr"),
                             ("images_per_s", "train/images_per_s")):
                if isinstance(row.get(key), (int, float)):
                    writer.add_scalar(tag, row[key], row["global_step"])
                    written += 1
        for row in epochs:
            for key in ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "lr"):
                if isinstance(row.get(key), (int, float)):
                    writer.add_scalar(f"epoch/{key}", row[key], row["global_step"])
                    written += 1
            for name, value in (row.get("per_class_acc") or {}).items():
                if isinstance(value, (int, float)):
                    writer.add_scalar(f"class_acc/{name}", value, row["global_step"])
                    written += 1
        config = Path(run_dir) / "config.toml"
        if config.is_file():
            writer.add_text("config", "```\n" + config.read_text(errors="replace")[:20_000] + "\n```", 0)
    finally:
        writer.close()
    return folder, written
