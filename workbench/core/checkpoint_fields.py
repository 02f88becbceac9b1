"""What a checkpoint's fields may hold, checked when it is read, before any of it is used.

A checkpoint is a file: edited, damaged or written by another program, its counts and scores
must not drive a loop, an allocation or a message. Each field is held to the rules its setting
or its meaning gives (a count is a whole number >= 0, an accuracy a fraction, the batch size
within --batch-size's bounds); a checkpoint that breaks one is unusable, in one sentence, and
the resume falls back to an earlier one as for a damaged file.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from workbench.core.errors import WorkbenchError

MOST_STEPS = 2**53  # far beyond any run; a count above it came from somewhere else


def check_fields(state: dict[str, Any], path) -> None:
    """WorkbenchError naming the first field of `state` that no run could have written."""
    problem = _first_problem(state)
    if problem:
        raise WorkbenchError(f"checkpoint {path} is damaged: {problem}")


def _first_problem(state: dict[str, Any]) -> str:
    from workbench.core.config import SETTING_BY_NAME

    if not isinstance(state.get("model"), dict):  # tensors, and a module's extra state: loading judges those
        return "its model is not a table of weights"
    progress = state.get("progress")
    if progress is not None:
        if not isinstance(progress, dict):
            return "its progress is not a table"
        for key in ("epoch", "epoch_step", "global_step"):
            if not _count(progress.get(key)):
                return f"progress.{key} is {progress.get(key)!r}, not a count of 0 or more"
        epochs_setting = SETTING_BY_NAME["epochs"]
        if progress["epoch"] > epochs_setting.high:
            return f"progress.epoch is {progress['epoch']}, more than --epochs allows ({epochs_setting.high})"
        best = progress.get("best_epoch")
        if best is not None and not (_count(best) and best <= progress["epoch"] + 1):
            return f"progress.best_epoch is {best!r}, not an epoch of this run"
        accuracy = progress.get("best_val_acc")
        if accuracy is not None and not (_number(accuracy) and 0 <= accuracy <= 1):
            return f"progress.best_val_acc is {accuracy!r}, not a fraction in 0..1"
        order = progress.get("order_state")
        if order is not None and not _generator_state(order):
            return "progress.order_state is not a random generator's state"
    if "batch_size" in state:
        size = state["batch_size"]
        declared = SETTING_BY_NAME["batch_size"]
        if not _count(size) or not declared.low <= size <= declared.high:
            return f"batch_size is {size!r}, outside --batch-size's {declared.range_text()}"
    if "history" in state and not (isinstance(state["history"], list)
                                   and all(isinstance(row, dict) for row in state["history"])):
        return "its history is not a list of epoch rows"
    loader = state.get("loader")
    if loader is not None and not (isinstance(loader, dict)
                                   and all(_generator_state(loader.get(key)) for key in ("order", "augment"))):
        return "its loader state is not two random generators' states"
    for key in ("mean", "std"):
        values = state.get(key)
        if values is not None and not (isinstance(values, list) and 1 <= len(values) <= 4
                                       and all(_number(v) and (key == "mean" or v > 0) for v in values)):
            return f"its {key} is {values!r}, not 1 to 4 finite numbers" + (" above 0" if key == "std" else "")
    classes = state.get("classes")
    if classes is not None and not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        return "its classes are not a list of names"
    for key in ("config", "model_options"):
        if key in state and state[key] is not None and not isinstance(state[key], dict):
            return f"its {key} is not a table"
    return ""


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MOST_STEPS


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _generator_state(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.dtype == torch.uint8 and value.dim() == 1
