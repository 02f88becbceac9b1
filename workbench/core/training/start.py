"""Where a new run's weights start: random, a network's trained weights (torchvision's ImageNet
ones), a file (--weights), or another run (--init-from).

`starting_point` reads and checks the source before anything is loaded or written (an unknown
run, another architecture, a missing download: one line, no run folder); `resolved` fills in the
preprocessing the weights were trained with where the config leaves it to them; `load_start`
puts the weights into a freshly built model by name and shape and says what it loaded, what is
new (a head for other classes) and what it skipped, and why.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from workbench.core.catalog import arch_label, is_pretrained
from workbench.core.config import RunConfig
from workbench.core.errors import ConfigError, WorkbenchError
from workbench.core.events import Notice
from workbench.core.models.pretrained import Preprocessing

WEIGHTS_LIMIT = 4 * 1024**3  # a weights file beyond 4 GiB is not a classifier this tool trains


@dataclass(frozen=True)
class StartingPoint:
    """The weights a new run starts from, and what they were trained with."""

    kind: str  # "pretrained", "file" or "run"
    source: str  # in words, e.g. "torchvision's ResNet18_Weights.IMAGENET1K_V1"
    file: Path
    preprocessing: Preprocessing | None  # None: a plain file says nothing about it
    classes: tuple[str, ...] | None = None  # what its head's outputs mean (a run's), when known


def starting_point(config: RunConfig, fetch: bool = True) -> StartingPoint | None:
    """The run's starting weights, checked (and downloaded) now; None for random weights.
    `fetch=False` checks everything but the download of ImageNet weights (a job queued for later)."""
    if config.init_from and config.weights:
        raise ConfigError("init_from", "give one starting point: a run to start from or a weights file, not both")
    if config.init_from:
        return _from_run(config)
    if config.weights.lower() == "none":
        if config.recipe == "finetune":
            raise ConfigError("recipe", "the finetune recipe starts from trained weights, not from none (random ones)")
        return None
    if config.weights:
        file = Path(config.weights).expanduser()
        if not file.is_file():
            raise ConfigError("weights", f"{file} {'is not a file' if file.exists() else 'does not exist'}")
        return StartingPoint("file", f"the file {file.name}", file.absolute(), None)
    if not fetch and is_pretrained(config.arch):
        return None
    if config.recipe == "finetune" and not is_pretrained(config.arch):
        raise ConfigError("recipe", "the finetune recipe starts from trained weights: choose a tv: network, a "
                                    "weights file or a run to start from (or the standard recipe)")
    if is_pretrained(config.arch):
        from workbench.core.models.pretrained import fetch_weights, preprocessing, weights_enum

        file = fetch_weights(config.arch)
        return StartingPoint("pretrained", f"torchvision's {weights_enum(config.arch)}", file, preprocessing(config.arch))
    return None


def check_start(config: RunConfig) -> None:
    """Refuse now what starting the run would refuse (a weights file that is not there, a run of
    another network, two starting points, fine-tuning from nothing, a network its recipe cannot
    train, a device or precision this machine does not have) without downloading anything: for the form, a
    queued job and a sweep's points, which train later, here."""
    from workbench.core.training.device import autocast_dtype, pick_device
    from workbench.core.training.recipes import recipe_for

    starting_point(config, fetch=False)
    recipe_for(config).check(config)
    autocast_dtype(config.precision, pick_device(config.device)[0])  # fp16 on the CPU, cuda without a GPU


def _from_run(config: RunConfig) -> StartingPoint:
    from workbench.core import runs

    text, _, which = config.init_from.rpartition(":") if config.init_from.endswith((":last", ":best")) \
        else (config.init_from, "", "best")
    try:
        run_dir = runs.resolve_run(text, config.runs_dir)
        info, source_config = runs.read_run_info(run_dir), runs.read_config(run_dir)
    except WorkbenchError as error:
        raise ConfigError("init_from", str(error)) from None
    if arch_label(source_config.arch) != arch_label(config.arch):
        raise ConfigError("init_from", f"{run_dir.name} trained {source_config.arch}, not {config.arch}: its weights "
                                       f"fit only the same architecture ({source_config.arch})")
    folder = run_dir / "checkpoints"
    file = folder / f"{which}.pt"
    if which == "best" and not file.is_file():
        file = folder / "last.pt"  # a run without validation keeps no best: its last model
    if not file.is_file():
        raise ConfigError("init_from", f"{run_dir.name} has no {file.name} to start from")
    problem = _preprocessing_problem(info)
    if problem:
        raise ConfigError("init_from", f"{run_dir / 'run.json'} {problem}; it cannot be a starting point")
    known = Preprocessing(info["image_size"], tuple(info["mean"]), tuple(info["std"]), info.get("resize") or "stretch")
    classes = info.get("classes")
    classes = tuple(classes) if isinstance(classes, list) and all(isinstance(c, str) for c in classes) else None
    return StartingPoint("run", f"run {run_dir.name} ({file.name})", file.absolute(), known, classes)


def _preprocessing_problem(info: dict[str, Any]) -> str:
    """What is wrong with a run.json's image size, mean, std and resize (a hand edit), or ""."""
    import math

    from workbench.core.config import RESIZE_MODES

    size, mean, std = info.get("image_size"), info.get("mean"), info.get("std")
    numbers = lambda values: isinstance(values, list) and values and all(  # noqa: E731
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)
    if not isinstance(size, int) or isinstance(size, bool) or not 8 <= size <= 512:
        return f"has image_size {size!r}, not a size of 8..512 px"
    if not numbers(mean) or not numbers(std) or len(mean) != len(std):
        return "has no per-channel mean and std of numbers"
    if min(std) <= 0:
        return "has a std that is not positive"
    if (info.get("resize") or "stretch") not in RESIZE_MODES:
        return f"has resize {info.get('resize')!r}, not one of {', '.join(RESIZE_MODES)}"
    return ""


def resolved(config: RunConfig, start: StartingPoint | None, saved: dict[str, Any] | None = None) -> RunConfig:
    """The config with its 'auto' choices made: the image size, resize and normalisation the starting
    weights were trained with (a run records what it trained with, so export and predict apply it).
    A resume's `saved` settings (its checkpoint's) make them as the run first made them."""
    if saved:
        kept = {key: saved[key] for key, auto in (("image_size", 0), ("resize", "auto"), ("normalize", "auto"))
                if getattr(config, key) == auto and key in saved}
        config = config.replace(**kept) if kept else config
    known = start.preprocessing if start else None
    changes: dict[str, Any] = {}
    if config.image_size == 0 and known is not None:
        changes["image_size"] = known.image_size
    if config.resize == "auto":
        changes["resize"] = known.resize if known is not None else "stretch"
    if config.normalize == "auto":
        changes["normalize"] = "weights" if known is not None else "train"
    elif config.normalize == "weights" and known is None and not saved:  # a resume has the run's own
        raise ConfigError("normalize", "weights: the starting weights carry no mean and std (a plain file, or "
                                       "random weights); use train or none")
    return config.replace(**changes) if changes else config


def normalization(start: StartingPoint | None) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The starting weights' own mean and std (for --normalize weights)."""
    return (start.preprocessing.mean, start.preprocessing.std) if start and start.preprocessing else None


# ---- loading ---------------------------------------------------------------------------------------


def load_start(model: nn.Module, start: StartingPoint, arch: str, image_size: int,
               classes: tuple[str, ...] | list[str] = ()) -> dict[str, Any]:
    """Load the starting weights into `model` by name and shape; returns the record run.json keeps:
    the source, the file's sha256, and which tensors were loaded, made new or skipped, and why.
    The head is new when the classes differ, even in number alone not: [cat, dog] is not [dog, zebra]."""
    state = read_weights(start.file)
    own = model.state_dict()
    if is_pretrained(arch):
        from workbench.core.models.pretrained import adapt_state, stem_weights

        state = adapt_state(arch, state, image_size)  # a ViT's position grid at this size
        for key, tensor in list(state.items()):  # grey (or 4-channel) images: the RGB stem adapted
            if key in own and tensor.ndim == 4 and tensor.shape[1] == 3 and own[key].shape[1] != 3 \
                    and tensor.shape[0] == own[key].shape[0]:
                state[key] = stem_weights(tensor, own[key].shape[1])
    new = {key: ("not in the weights" if key not in state else f"shape {_shape(state[key])} there, {_shape(own[key])} here")
           for key in own if key not in state or tuple(state[key].shape) != tuple(own[key].shape)}
    new = {key: why for key, why in new.items() if not (key.endswith("num_batches_tracked") and key not in state)}
    if start.classes is not None and list(start.classes) != list(classes):
        from workbench.core.models.head import head_name

        head = head_name(model)
        reason = f"other classes: {_few(start.classes)} there, {_few(classes)} here"
        new |= {key: new.get(key, reason) for key in own if key.rsplit(".", 1)[0] == head}
    loaded = [key for key in own if key in state and key not in new]
    skipped = {key: "not in this network" for key in state if key not in own}
    if not loaded:
        raise WorkbenchError(f"{start.source} holds no weights this {arch} can take (none of its "
                             f"{len(state)} names and shapes match); is it another architecture?")
    for key in loaded:
        problem = _value_problem(state[key], own[key])
        if problem:
            raise WorkbenchError(f"{start.source} cannot start this run: {key} {problem}")
    with torch.no_grad():
        for key in loaded:
            own[key].copy_(state[key].to(own[key].dtype))
    return {"source": start.source, "kind": start.kind, "file": str(start.file), "sha256": sha256(start.file),
            "loaded": loaded, "new": new, "skipped": skipped, "untrained_norms": _untrained_norms(model, loaded)}


def _value_problem(value: torch.Tensor, wanted: torch.Tensor) -> str:
    """Why a tensor cannot start a layer: another kind of number, or values that are not finite."""
    if wanted.is_floating_point() and (not value.is_floating_point() or value.is_complex()):
        return f"holds {str(value.dtype).removeprefix('torch.')} values where the network keeps floats"
    if value.is_floating_point() and not bool(torch.isfinite(value).all()):
        return "holds values that are not finite (NaN or infinity): these weights never trained to anything"
    return ""


def _few(names) -> str:
    names = list(names)
    return "[" + ", ".join(names[:4]) + (", …" if len(names) > 4 else "") + "]"


def _untrained_norms(model: nn.Module, loaded: list[str]) -> int:
    """BatchNorm layers whose loaded statistics are still their initial ones (mean 0, variance 1):
    weights saved before any training step, or trained with the statistics frozen. Kept frozen,
    they would not normalise anything."""
    names = set(loaded)
    return sum(1 for name, module in model.named_modules()
               if isinstance(module, nn.modules.batchnorm._BatchNorm) and f"{name}.running_var" in names
               and module.running_var is not None and bool((module.running_var == 1).all())
               and bool((module.running_mean == 0).all()))


def read_weights(file: Path) -> dict[str, torch.Tensor]:
    """A state dict from a safetensors file (known by its header, whatever its name), or a torch file
    (a plain state dict, a workbench checkpoint's 'model', or a 'state_dict' entry) read as weights
    only, never running code; one line that says what the file is for anything else."""
    import pickle

    from workbench.core.safe_read import NotReadable, open_regular

    try:
        with open_regular(file, WEIGHTS_LIMIT) as handle:  # a regular file within the limit, or a sentence
            head = handle.read(9)
            if len(head) == 9 and head[8:9] == b"{":  # safetensors: an 8-byte header length, then JSON
                from safetensors.torch import load_file

                state: Any = load_file(str(file))  # checks the header before reading any tensor
            else:
                handle.seek(0)
                state = torch.load(handle, map_location="cpu", weights_only=True)
    except NotReadable as error:
        raise WorkbenchError(f"weights {error}") from None
    except pickle.UnpicklingError as error:
        if "global" not in str(error).lower():  # not a pickle of objects at all: bytes of something else
            raise WorkbenchError(f"{file} is not a weights file, or it is damaged (a .safetensors file, or a "
                                 ".pt/.pth state dict saved by torch.save)") from None
        raise WorkbenchError(f"refusing {file}: it holds Python objects besides weights, and loading it "
                             "could run code; save a state dict (model.state_dict()) or a .safetensors file") from None
    except Exception:  # a truncated zip, a damaged header, text, nothing at all
        raise WorkbenchError(f"{file} is not a weights file, or it is damaged (a .safetensors file, or a "
                             ".pt/.pth state dict saved by torch.save)") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    elif isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WorkbenchError(f"{file} is not a state dict of tensors (names to weights)")
    return {str(key).removeprefix("module.").removeprefix("_orig_mod."): value for key, value in state.items()}


def sha256(file: Path) -> str:
    with open(file, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def start_summary(record: dict[str, Any]) -> str:
    """One line for the log: where the weights came from and what became of each layer."""
    layers = lambda keys: sorted({key.rsplit(".", 1)[0] for key in keys})  # noqa: E731
    loaded = layers(record["loaded"])
    new = sorted(record["new"]) if len(record["new"]) <= 4 else layers(record["new"])  # a few: each by name
    reasons = sorted(set(record["new"].values()))
    text = f"starting from {record['source']}: {len(record['loaded'])} tensors of {len(loaded)} layers loaded"
    if new:
        text += f"; new (trained from random): {', '.join(new[:6])}{' …' if len(new) > 6 else ''} ({reasons[0]})"
    if record["skipped"]:
        text += f"; skipped {len(record['skipped'])} the network lacks: {', '.join(layers(record['skipped'])[:4])}"
    return text


def start_notices(record: dict[str, Any] | None, config: RunConfig) -> list[Notice]:
    """What the log says of the start: where the weights came from and what became of each layer;
    a warning when their BatchNorm statistics were never learned (kept frozen, they normalise nothing)."""
    if not record:
        return []
    notices = [Notice(start_summary(record))]
    count = record.get("untrained_norms", 0)
    if count:
        advice = " and --batchnorm frozen would keep them so: use --batchnorm train" \
            if config.recipe == "finetune" and config.batchnorm == "frozen" else ""
        notices.append(Notice(f"{count} BatchNorm layer(s) of the starting weights hold their initial statistics "
                              f"(mean 0, variance 1), never learned from data{advice}", "warning"))
    return notices


def _shape(tensor: torch.Tensor) -> str:
    return "x".join(map(str, tensor.shape)) or "scalar"
