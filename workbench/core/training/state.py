"""What a checkpoint holds and how a resumed run gets it back, to the exact step.

The one checkpoint builder for every recipe: a plain dict of tensors and containers, loadable
with weights_only=True. Reading a run to resume it writes nothing, so a refused resume leaves
every file of the run as it was.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from workbench.core import checkpoint as ckpt
from workbench.core import network_copy
from workbench.core.config import STANDARD, RunConfig, changed_on_resume
from workbench.core.data.types import Dataset
from workbench.core.errors import ConfigError, WorkbenchError
from workbench.core.training.batches import DeviceBatches
from workbench.core.training.parts import Recipe, TrainingParts
from workbench.core.wording import count as counted

CHECKPOINT_FORMAT = 2


@dataclass
class Progress:
    """Where a run is; saved in every checkpoint so a resume continues exactly."""

    epoch: int = 0  # completed epochs
    epoch_step: int = 0  # steps done in a partly trained epoch (0 = at an epoch boundary)
    global_step: int = 0
    best_epoch: int | None = None  # highest validation accuracy so far
    best_val_acc: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)  # the epoch rows so far
    order_state: torch.Tensor | None = None  # shuffle generator state at the partial epoch's start


@dataclass
class ResumePoint:
    """A run's newest usable checkpoint, read but not yet applied."""

    state: dict[str, Any]
    path: Path
    problems: list[str]  # checkpoints skipped on the way, and why
    arch: str = ""  # what to build: the config's architecture, or the run's copy of a user network file
    notes: list[str] = field(default_factory=list)  # what the user should know (their network file changed)

    @property
    def progress(self) -> Progress:
        saved = self.state["progress"]
        return Progress(
            epoch=saved["epoch"],
            epoch_step=saved["epoch_step"],
            global_step=saved["global_step"],
            best_epoch=saved.get("best_epoch"),
            best_val_acc=saved.get("best_val_acc"),
            history=list(self.state.get("history", [])),
            order_state=saved.get("order_state"),
        )


def checkpoint_state(
    model: nn.Module,
    parts: TrainingParts,
    batches: DeviceBatches,
    progress: Progress,
    batch_size: int,
    config: RunConfig,
    data: Dataset,
    recipe: Recipe,
    model_options: dict[str, Any],
) -> dict[str, Any]:
    return {
        "format": CHECKPOINT_FORMAT,
        "recipe": recipe.record(),
        "model": model.state_dict(),
        "model_options": model_options,
        "optimizer": parts.optimizer.state_dict(),
        "scaler": parts.scaler.state_dict(),
        "averager": parts.averager.state_dict() if parts.averager is not None else None,
        "loader": batches.state(),
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        },
        "progress": {
            "epoch": progress.epoch,
            "epoch_step": progress.epoch_step,
            "global_step": progress.global_step,
            "best_epoch": progress.best_epoch,
            "best_val_acc": progress.best_val_acc,
            "order_state": progress.order_state,
        },
        "history": progress.history,
        "batch_size": batch_size,  # may be smaller than config's after an out-of-memory retry
        "config": config.to_dict(),
        "classes": list(data.classes),
        "mean": list(data.mean),
        "std": list(data.std),
        "data_identity": dict(data.identity),
    }


RUN_FILES = ("config.toml", "status", "run.json", "metrics.jsonl", ".lock")


def check_run_files(run_dir: Path) -> None:
    """Refuse a run folder whose files are not what the run wrote (a folder where a file was,
    a pipe that would block a read forever) before anything reads or writes them."""
    for name in RUN_FILES:
        path = run_dir / name
        if path.exists() and not path.is_file():
            raise WorkbenchError(f"{path} is not a regular file; the run folder was changed by hand, restore it")
    for name in ("checkpoints", "images", "export"):
        path = run_dir / name
        if path.exists() and not path.is_dir():
            raise WorkbenchError(f"{path} is not a folder; the run folder was changed by hand, restore it")
    if not os.access(run_dir, os.W_OK):
        raise WorkbenchError(f"cannot write to {run_dir} (read-only?); a resume needs to write its checkpoints there")


def read_resume_point(run_dir: Path, epochs: int) -> ResumePoint:
    """The newest usable checkpoint of a run; raises WorkbenchError when the run cannot go on."""
    folder = run_dir / "checkpoints"
    state, path, problems = ckpt.load_latest(folder, map_location="cpu")
    arch = str(state.get("config", {}).get("arch", ""))
    point = ResumePoint(state, path, problems, network_copy.arch_in(run_dir, arch),
                        [note for note in [network_copy.drift(run_dir, arch)] if note])
    on_disk = _config_file(run_dir)
    if on_disk is not None:  # before the data loads: a changed image size would decode a new cache
        check_settings_kept(state.get("config", {}), on_disk, "config.toml")
    saved = point.progress
    if saved.epoch >= epochs:  # a partial epoch is epoch + 1, so it needs epochs > epoch too
        raise ConfigError(
            "epochs",
            f"{run_dir.name} has already trained {counted(saved.epoch, 'epoch')}; resume with --epochs "
            f"greater than {saved.epoch}",
        )
    return point


def check_settings_kept(saved: dict[str, Any], config: RunConfig, source: str) -> None:
    """Refuse a setting the declarations say a resume must keep (seed, image size, split...) when
    `config` changed it since the checkpoint was trained: the run would go on as another run."""
    changed = changed_on_resume(saved, config)
    if changed:
        name, before, now = changed[0]
        more = f" (also changed: {', '.join(other for other, _, _ in changed[1:])})" if changed[1:] else ""
        raise ConfigError(name, f"the checkpoint was trained with {before!r}, {source} says {now!r}{more}; "
                                f"a resume keeps it: restore {source} or start a new run")


def _config_file(run_dir: Path) -> RunConfig | None:
    """The run's config.toml as a resume would read it; None when unreadable (the caller that
    reads it for the resume says why, so this check stays quiet)."""
    try:
        return RunConfig.from_toml(run_dir / "config.toml", check_paths=False)
    except WorkbenchError:
        return None


def check_compatible(point: ResumePoint, config: RunConfig, data: Dataset) -> None:
    """Refuse, before anything is written, data or settings the checkpoint was not trained on."""
    state = point.state
    saved_classes = list(state.get("classes", []))
    if saved_classes != list(data.classes):
        raise WorkbenchError(
            f"the data's classes are not the ones this run was trained on: the checkpoint has "
            f"{_listing(saved_classes)}, the data set now has {_listing(data.classes)}; resuming would "
            "give images the wrong labels, so restore the class folders or start a new run"
        )
    for key in ("arch", "dataset"):
        saved = state["config"].get(key)
        if saved is not None and saved != getattr(config, key):
            raise ConfigError(
                key, f"the run was trained with {key} {saved!r}, not {getattr(config, key)!r}; "
                "config.toml and the checkpoint disagree"
            )
    saved_identity, identity = state.get("data_identity") or {}, data.identity
    if saved_identity and identity and saved_identity != identity:
        changed = sorted(name for name in set(saved_identity) | set(identity) if saved_identity.get(name) != identity.get(name))
        raise WorkbenchError(
            f"the images of class folders {_listing(changed)} changed since this run started (renamed, swapped, "
            "added, removed or rewritten files); resuming would train on other data or mislabelled images, and a folder "
            "without test/ would re-draw its test split; restore the files or start a new run"
        )
    saved_optimizer = state["config"].get("optimizer")
    if config.recipe in STANDARD and saved_optimizer != config.optimizer:
        raise ConfigError(
            "optimizer",
            f"the checkpoint's optimizer state is for {saved_optimizer!r}, not {config.optimizer!r}; "
            "resume with the run's own optimizer",
        )
    saved_recipe = state.get("recipe", {}).get("name", "standard")
    if saved_recipe != config.recipe:
        raise ConfigError("recipe", f"the run was trained with the {saved_recipe} recipe, not {config.recipe}")
    check_settings_kept(state["config"], config, "this resume's settings")


def restore(point: ResumePoint, model: nn.Module, parts: TrainingParts, batches: DeviceBatches) -> None:
    """Put weights, optimizer, scaler, averager, batch generators and global RNGs back as saved.

    Raises WorkbenchError when the saved tensors do not fit this model (another architecture
    or image size): nothing has been written by then.
    """
    state = point.state
    scheduled = parts.scheduler.get_last_lr()  # this run's schedule at the resumed step
    try:
        model.load_state_dict(state["model"])
        parts.optimizer.load_state_dict(state["optimizer"])
        # The saved groups carry the rate of the step they stopped at, under the schedule of then: a
        # resume to more epochs goes on with the new schedule's rate from its first step.
        for group, rate in zip(parts.optimizer.param_groups, scheduled, strict=True):
            group["lr"] = rate
        if parts.averager is not None and state.get("averager") is not None:
            parts.averager.load_state_dict(state["averager"])
    except (RuntimeError, ValueError, KeyError) as error:
        first = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise WorkbenchError(f"{point.path} does not fit this model and data ({first})") from None
    parts.scaler.load_state_dict(state["scaler"])
    batches.load_state(state["loader"])
    torch.set_rng_state(state["rng"]["torch"])
    if state["rng"].get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])


def _listing(classes) -> str:
    names = [str(name) for name in classes]
    shown = ", ".join(names[:12]) + (f", … ({len(names)} in all)" if len(names) > 12 else "")
    return f"[{shown}]"
