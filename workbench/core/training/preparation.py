"""What a run needs before its first step: its data, its model, batches and recipe parts, and run.json.

fit() builds through these functions, and so do the LR finder and the batch-size finder, so a
trial trains exactly what the run would.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from workbench.core.config import RunConfig
from workbench.core.data.load import load_dataset
from workbench.core.data.types import Dataset
from workbench.core.errors import ConfigError, WorkbenchError
from workbench.core.events import EventSink, Notice
from workbench.core.models import check_forward, count_parameters, create, input_problem
from workbench.core.training.batches import DeviceBatches, batches_for, images_left_out
from workbench.core.training.control import TrainControl
from workbench.core.training.device import describe_device
from workbench.core.training.device_clock import DeviceClock
from workbench.core.training.distributed import World
from workbench.core.training.parts import Recipe, TrainingParts, View
from workbench.core.training.start import (
    StartingPoint,
    load_start,
    normalization,
    resolved,
    start_notices,
    starting_point,
)
from workbench.core.training.state import ResumePoint, restore
from workbench.core.wording import count as counted


def load_run_data(config: RunConfig, emit: EventSink, control: TrainControl,
                  stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None) -> Dataset:
    """The run's data set with its validation split; progress and warnings arrive as Notices,
    and a stop asked for while decoding ends the load (StopRequested). `stats` are the mean and
    std of --normalize weights: the starting weights' own, or those a resumed run recorded."""
    started = time.perf_counter()
    data = load_dataset(
        config.dataset, data_dir=config.resolved_data_dir(), image_size=config.image_size,
        seed=config.seed, test_fraction=config.test_fraction, val_fraction=config.val_fraction,
        stream_over_mb=config.stream_over_mb, resize=config.resize,
        log=lambda message: emit(Notice(message)),
        warn=lambda message: emit(Notice(message, "warning")),
        should_stop=lambda: control.stop_requested,
    )
    _refuse_empty_splits(data, config)
    if config.normalize == "none":  # the seed's ToTensor: every layer after it sees pixels / 255
        data = dataclasses.replace(data, mean=(0.0,) * data.channels, std=(1.0,) * data.channels)
        emit(Notice("normalize none: the model sees pixels / 255, without the training split's mean/std"))
    elif config.normalize == "weights":
        if stats is None or len(stats[0]) != data.channels:
            raise ConfigError("normalize", f"weights: no mean and std for {data.channels}-channel images come with "
                                           "the starting weights; use train or none")
        data = dataclasses.replace(data, mean=tuple(stats[0]), std=tuple(stats[1]))
    shape = f"{data.image_size}x{data.image_size}x{data.channels}"
    val = f" / {len(data.val)} validation" if data.val is not None else ""
    emit(Notice(
        f"data: {data.name}, {len(data.train)} train{val} / {len(data.test)} test images, {shape}, "
        f"{counted(data.num_classes, 'class')} ({time.perf_counter() - started:.1f} s)"
    ))
    return data


def _refuse_empty_splits(data: Dataset, config: RunConfig) -> None:
    """Before training: a split with no images would train, then fail evaluating or drawing it."""
    if len(data.test) == 0:
        raise WorkbenchError(f"{data.name} leaves no test images: with no test/ folder, a class needs at least 2 "
                             "images to hold one out; add images, or a test/ folder")
    if data.val is not None and len(data.val) == 0:
        raise ConfigError("val_fraction", f"holds out no validation images: every class of {data.name} has only one "
                                          "training image; add images, or use --val-fraction 0")


def run_info(
    config: RunConfig, data: Dataset, model: nn.Module, model_options: dict[str, Any], recipe: Recipe,
    batch_size: int, device: torch.device, world: World | None = None, run_id: str = "",
    start: dict[str, Any] | None = None, trial: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """run.json: what export, predict, the runs list and a resume need to know without the data.
    `batch_size` is the global batch: in a data-parallel run, world_size processes share it."""
    world = world or World()
    return {
        "arch": config.arch, "model_options": model_options, "recipe": recipe.record(),
        "dataset": data.name, "classes": list(data.classes), "channels": data.channels,
        "image_size": data.image_size, "resize": config.resize, "mean": list(data.mean), "std": list(data.std),
        "params": count_parameters(model), "train_size": len(data.train),
        "val_size": len(data.val) if data.val is not None else 0, "test_size": len(data.test),
        "batch_size": batch_size, "skipped_files": data.skipped, "device": describe_device(device),
        "left_out_per_epoch": images_left_out(len(data.train), batch_size, recipe.drop_last),
        "data_identity": dict(data.identity), "world_size": world.size,
        **({"job": world.job} if world.job else {}),  # torchrun's run id: a restarted job finds its run by it
        **({"run_id": run_id} if run_id else {}),  # the id the parent gave it (a queue job, the app's launcher)
        **({"start": start} if start else {}),  # the weights it started from: source, sha256, layers loaded
        **({"trial": trial} if trial else {}),  # a search's trial: its study, number and storage
    }


@dataclass
class Built:
    """Everything one training step and one evaluation need, for a fresh run or a resumed one."""

    model: nn.Module
    train: DeviceBatches
    held_out: dict[str, DeviceBatches]  # "val" and/or "test"
    parts: TrainingParts
    batch_size: int
    model_options: dict[str, Any]
    views: tuple[View, ...]
    init_s: float  # device time of the data-dependent init (whitening), part of the run's timing
    shards: dict[str, torch.Tensor | None]  # per split, the positions this rank holds (None: all of them)
    start: dict[str, Any] | None = None  # what load_start loaded (a new run from trained weights)


def build_training(
    config: RunConfig, data: Dataset, recipe: Recipe, device: torch.device,
    point: ResumePoint | None = None, done_steps: int = 0, batch_size: int | None = None,
    world: World | None = None, start: StartingPoint | None = None,
) -> Built:
    """Model, batches and the recipe's parts; a resume's saved state put back (or refused with
    a WorkbenchError before anything is written). `batch_size` overrides the config's (trials).
    A new run loads its `start` weights (a resume has its own in the checkpoint).
    In a data-parallel `world` the batches hold this rank's shards and the global batch's share."""
    world = world or World()
    options = dict(point.state.get("model_options") or {}) if point else recipe.model_options(config)
    arch = point.arch if point else config.arch  # a resumed user network: the run's own copy
    problem = input_problem(arch, data.channels, data.num_classes, data.image_size, **options)
    if problem:
        raise ConfigError("image_size", problem)
    model = create(arch, data.channels, data.num_classes, data.image_size, **options).to(device)
    check_forward(arch, model, data.channels, data.num_classes, data.image_size, device)
    loaded = None
    if start is not None and point is None:  # a resume has its weights in the checkpoint
        loaded = load_start(model, start, arch, data.image_size, data.classes)
    cuda = device.type == "cuda"
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    size = batch_size or (int(point.state.get("batch_size", config.batch_size)) if point else config.batch_size)
    local_size = world.check_batch(size)
    shards = {"train": world.train_shard(len(data.train), config.seed)}
    train = batches_for(
        *_take(data.train, shards["train"]), data.mean, data.std, device, local_size,
        shuffle=True, augment_settings=recipe.augment_settings(config), seed=config.seed, channels_last=cuda,
        drop_last=recipe.drop_last,
    )
    eval_size = recipe.eval_batch_size(config, local_size)
    held_out = {}
    for name, split in (("val", data.val), ("test", data.test)):
        if split is not None:
            shards[name] = world.eval_shard(len(split))
            held_out[name] = batches_for(*_take(split, shards[name]), data.mean, data.std, device, eval_size,
                                         shuffle=False, channels_last=cuda)
    init_s = 0.0
    if point is None and loaded is None and hasattr(model, "init_from_data"):  # before the parts copy any weights
        clock = DeviceClock(device)
        started = clock.synchronized_now()
        model.init_from_data(train.plain(recipe.init_samples))
        init_s = clock.synchronized_now() - started
    parts = recipe.build(model, config, device, len(train), size, done_steps)
    if point is not None:
        restore(point, model, parts, train)
    return Built(model, train, held_out, parts, size, options, recipe.views(), init_s, shards, loaded)


def _take(split, shard: torch.Tensor | None):
    """A split's images and labels, or only this rank's shard of them."""
    if shard is None:
        return split.images, split.labels
    if not isinstance(split.images, torch.Tensor):
        raise ConfigError("stream_over_mb", "a folder streamed from its files is not split across processes; "
                                            "raise --stream-over-mb to hold it in memory, or train in one process")
    return split.images[shard], split.labels[shard]


@dataclass
class Trial:
    """What a tuning tool (LR finder, batch-size finder) trains with: the run it would be, unstarted."""

    config: RunConfig
    device: torch.device
    amp_dtype: torch.dtype | None
    recipe: Recipe
    data: Dataset
    built: Built


def prepare_trial(config: RunConfig, emit: EventSink, control: TrainControl, batch_size: int | None = None,
                  data: Dataset | None = None) -> Trial:
    """Device, recipe, data (unless given) and the built model, exactly as fit() would make them; no run folder."""
    from workbench.core.training.device import autocast_dtype, pick_device, seed_everything
    from workbench.core.training.recipes import recipe_for

    device, notices = pick_device(config.device)
    amp_dtype = autocast_dtype(config.precision, device)
    start = starting_point(config)
    config = resolved(config, start)
    recipe = recipe_for(config)
    recipe.check(config)
    for notice in notices:
        emit(Notice(notice, "warning"))
    seed_everything(config.seed)
    data = data if data is not None else load_run_data(config, emit, control, normalization(start))
    built = build_training(config, data, recipe, device, batch_size=batch_size, start=start)
    for notice in start_notices(built.start, config):
        emit(notice)
    recipe.begin_epoch(built.model, 1, config)  # as the run's first epoch: fine-tuning trains the head alone
    return Trial(config, device, amp_dtype, recipe, data, built)
