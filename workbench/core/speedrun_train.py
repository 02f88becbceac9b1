"""The cifar10-speedrun recipe: airbench94-style training of the `speedrun` network, without a UI.

Target: >= 94.0% CIFAR-10 test accuracy (mean of 5 seeds) in <= 3 s on one H100, timing the
training loop and the final test-time-augmented evaluation; moving the data to the GPU and
the compile warm-up are timed apart. Measured: NOT YET ON A GPU (benchmarks/speedrun_gpu.py
measures it). On 2 shared CPU cores, fp32: ~45 s per step of 1024 (~35 min per epoch); 2
epochs on 5,120 JPEG CIFAR-10 images reach 36.5% with TTA on 1,000 test images.

Techniques (all from airbench94's public description, every line written here): the uint8
data lives on the device and is augmented there; a frozen 2x2 patch-whitening first layer;
identity-initialised convs; label smoothing; BatchNorm biases at 64x the learning rate;
lookahead on the weights; alternating flips; 2-pixel reflect translations; 6-view test-time
augmentation; bf16/fp16 autocast, channels_last and torch.compile on a GPU; Nesterov SGD at
batch 1024 with a linear warm-up and decay, the learning rate counted per 1024 examples.

Events: StepMetrics a few times a second, read from the device without waiting for it (an
asynchronous copy checked with a CUDA event, so no step ever syncs); EpochMetrics once per
epoch with that epoch's train loss and accuracy. The test set is evaluated once, after the
last epoch (with test-time augmentation), unless `evaluate_each_epoch=True`; epochs before
that repeat the previous test values (0.0 before any evaluation), so no field is ever NaN.
RunStarted, checkpoints and Finished stay the engine's job.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from workbench.core import runs
from workbench.core.config import RunConfig
from workbench.core.control import TrainControl
from workbench.core.data import Dataset
from workbench.core.device import autocast_dtype, gpu_memory_mb, seed_everything
from workbench.core.device_clock import DeviceClock, Readout
from workbench.core.events import EpochMetrics, EventSink, Notice, StepMetrics
from workbench.core.models.speedrun import Speedrun
from workbench.core.speedrun_recipe import (
    HYPERPARAMETERS,
    Lookahead,
    build_model,
    build_optimizer,
    lookahead_decay,
    lr_factor,
    set_lr,
    train_step,
)
from workbench.core.speedrun_data import (
    TestImages,
    TrainImages,
    TTAEvaluation,
    evaluate_tta,
    full_batches,
)
from workbench.core.steps import NonFiniteLoss

STEP_SAMPLE_S = 0.3  # at most ~3 StepMetrics a second
WARMUP_STEPS = 3  # compiled training steps run (and undone) before the clock starts

# =============================================================================================
# Result and entry point
# =============================================================================================


@dataclass
class SpeedrunResult:
    tta_acc: float | None  # test accuracy (0..1) with test-time augmentation; None when stopped
    acc: float | None  # test accuracy of one plain view, same weights; None when stopped
    test_loss: float | None  # cross entropy of the TTA logits (no label smoothing)
    train_eval_s: float  # whitening init + training loop + final evaluation, device-synchronised
    data_s: float  # moving the uint8 splits to the device
    compile_s: float  # compile and cuDNN warm-up before the clock starts (0 on the CPU)
    epochs: int  # epochs completed
    steps: int  # optimizer steps taken
    stopped: bool  # control.stop() ended training early (no final evaluation then)
    model: nn.Module  # the trained network in eval mode (not the compiled wrapper)
    per_class_acc: dict[str, float] = field(default_factory=dict)  # with TTA
    history: list[dict[str, Any]] = field(default_factory=list)  # the epoch records


def fit_speedrun(
    config: RunConfig,
    events: EventSink,
    control: TrainControl,
    data: Dataset,
    device: torch.device,
    run_dir: Path | None,
    *,
    hyperparameters: dict[str, Any] | None = None,
    evaluate_each_epoch: bool = False,
    compile_mode: str | None = None,
) -> SpeedrunResult:
    """Train a fresh `speedrun` network on `data` with the recipe above; see the module docstring.

    From `config` it takes epochs, seed, precision and compile (on a GPU; the CPU never
    compiles); `device` is the one the caller picked from config.device. `hyperparameters`
    overrides entries of HYPERPARAMETERS (for experiments and tests). With `run_dir`, step
    and epoch records go to its metrics.jsonl and the timings to speedrun.json.
    Raises WorkbenchError for a bad setting and NonFiniteLoss when training diverges.
    """
    hyp = {**HYPERPARAMETERS, **(hyperparameters or {})}
    unknown = sorted(set(hyp) - set(HYPERPARAMETERS))
    if unknown:
        raise ValueError(f"unknown speedrun hyperparameter {unknown[0]!r}")
    amp_dtype = autocast_dtype(config.precision, device)
    seed_everything(config.seed)
    clock = DeviceClock(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    use_compile = config.compile and device.type != "cpu"
    if config.compile and not use_compile:
        events(Notice("speedrun: torch.compile is skipped on the CPU (its warm-up would outlast the run)"))
    events(Notice(_recipe_line(hyp, config, len(data.train.labels), amp_dtype, use_compile)))

    started = clock.synchronized_now()
    train = TrainImages(data.train.images, data.train.labels, data.mean, data.std, device, hyp, config.seed)
    test = TestImages(data.test.images, data.test.labels, data.mean, data.std, device)
    data_s = clock.synchronized_now() - started

    model = build_model(data.channels, data.num_classes, hyp, device)
    net = torch.compile(model, mode=compile_mode, dynamic=False) if use_compile else model
    compile_s = 0.0
    if device.type == "cuda":
        started = clock.synchronized_now()
        warm_up(model, net, train, test, hyp, amp_dtype)
        compile_s = clock.synchronized_now() - started

    run = _Run(config, events, control, hyp, model, net, train, test, data.classes, amp_dtype, clock, run_dir)
    result = run.train_and_evaluate(evaluate_each_epoch)
    result.data_s, result.compile_s = data_s, compile_s
    if run_dir is not None:
        _write_summary(run_dir, result, config, hyp)
    if result.tta_acc is not None:
        events(Notice(
            f"speedrun: {result.tta_acc:.2%} with TTA ({result.acc:.2%} without) in "
            f"{result.train_eval_s:.2f} s of training + evaluation; data to device "
            f"{data_s:.2f} s, warm-up {compile_s:.1f} s (both excluded)"
        ))
    return result


def steps_per_epoch(train_size: int, batch_size: int = HYPERPARAMETERS["batch_size"]) -> int:
    """Full batches only (a ragged last one would give a compiled model a new shape)."""
    return full_batches(train_size, batch_size)


# =============================================================================================
# Training loop
# =============================================================================================


def warm_up(
    model: Speedrun,
    net: nn.Module,
    train: TrainImages,
    test: TestImages,
    hyp: dict[str, Any],
    amp_dtype: torch.dtype | None,
) -> None:
    """Run everything the timed run will run -- whitening, training steps, lookahead, the full
    TTA evaluation -- so compilation and cuDNN's algorithm search happen now, for every shape;
    then put back the weights, BatchNorm statistics and the data's random state."""
    saved = {name: value.detach().clone() for name, value in model.state_dict().items()}
    random_state = train.generator.get_state()
    optimizer = build_optimizer(model, hyp)
    model.init_whitening(train.plain(min(hyp["whiten_samples"], len(train))))
    lookahead = Lookahead(model)
    model.train()
    for step, (images, labels) in enumerate(train.batches(0)):
        if step == WARMUP_STEPS:
            break
        set_lr(optimizer, lr_factor(step, WARMUP_STEPS, hyp), whiten_bias_frozen=False)
        train_step(net, images, labels, optimizer, hyp["label_smoothing"], amp_dtype)
        lookahead.update(0.5)
    evaluate_tta(net, test, level=hyp["tta_level"], batch_size=hyp["eval_batch_size"], amp_dtype=amp_dtype)
    readout = Readout(DeviceClock(train.images.device))  # the first pinned host buffer, allocated now
    readout.send(torch.zeros(2, dtype=torch.float64, device=train.images.device), ("warm-up",))
    list(readout.ready(wait=True))
    model.load_state_dict(saved)  # copies into the same tensors: the compiled graphs stay valid
    train.generator.set_state(random_state)


class _Run:
    """One timed training run and its evaluation; split into methods so each reads on its own."""

    def __init__(self, config, events, control, hyp, model, net, train, test, classes, amp_dtype, clock, run_dir):
        self.emit, self.control, self.hyp = events, control, hyp
        self.model, self.net, self.train, self.test = model, net, train, test
        self.classes, self.amp_dtype, self.clock, self.run_dir = list(classes), amp_dtype, clock, run_dir
        self.epochs = config.epochs
        self.steps = train.steps_per_epoch
        self.total_steps = self.epochs * self.steps
        self.readout = Readout(clock)
        self.evaluations: dict[int, TTAEvaluation] = {}  # by 1-based epoch
        self.history: list[dict[str, Any]] = []
        self.shown_test = (0.0, 0.0, 0.0)  # (loss, acc, best) repeated until an evaluation

    def train_and_evaluate(self, evaluate_each_epoch: bool) -> SpeedrunResult:
        hyp, model, train = self.hyp, self.model, self.train
        optimizer = build_optimizer(model, hyp)  # its first construction imports torch._dynamo
        started = self.clock.synchronized_now()
        self.host_started = time.perf_counter()
        self.start_stamp = self.clock.stamp()
        self.previous = _Sample(epoch=0, step=0, global_step=0, loss=0.0, correct=0.0, stamp=self.start_stamp)
        self.epoch_end_stamps = {0: self.start_stamp}
        model.init_whitening(train.plain(min(hyp["whiten_samples"], len(train))))
        lookahead = Lookahead(model)
        global_step, epochs_done, stopped = 0, 0, False
        last_sample_at = time.perf_counter()

        for epoch in range(self.epochs):
            model.train()
            frozen = epoch >= hyp["whiten_bias_epochs"]
            tally = torch.zeros(2, dtype=torch.float64, device=train.images.device)  # loss sum, correct
            for step, (images, labels) in enumerate(train.batches(epoch), start=1):
                self.control.wait_while_paused()
                if self.control.stop_requested:
                    stopped = True
                    break
                set_lr(optimizer, lr_factor(global_step, self.total_steps, hyp), frozen)
                tally += train_step(self.net, images, labels, optimizer, hyp["label_smoothing"], self.amp_dtype)
                global_step += 1
                if global_step % hyp["lookahead_every"] == 0:
                    lookahead.update(lookahead_decay(global_step, self.total_steps, hyp))
                if time.perf_counter() - last_sample_at >= STEP_SAMPLE_S:
                    self.readout.send(tally, ("step", epoch + 1, step, global_step))
                    last_sample_at = time.perf_counter()
                self._report(wait=False)
            if stopped:
                break
            epochs_done = epoch + 1
            if epochs_done == self.epochs:  # end on the slow weights, the last steps folded in
                lookahead.update(lookahead_decay(global_step, self.total_steps, hyp))
            self.readout.send(tally, ("epoch", epochs_done, self.steps, global_step))
            if epochs_done == self.epochs or evaluate_each_epoch:
                self.evaluations[epochs_done] = evaluate_tta(
                    self.net, self.test, level=hyp["tta_level"], batch_size=hyp["eval_batch_size"],
                    amp_dtype=self.amp_dtype,
                )
            if epochs_done < self.epochs:  # the last report waits until the clock has stopped
                self._report(wait=False)

        train_eval_s = self.clock.synchronized_now() - started
        self._report(wait=True)
        model.eval()
        final = None if stopped else self.evaluations.get(epochs_done)
        return SpeedrunResult(
            tta_acc=final.tta_acc if final else None,
            acc=final.acc if final else None,
            test_loss=final.loss if final else None,
            train_eval_s=train_eval_s,
            data_s=0.0,
            compile_s=0.0,
            epochs=epochs_done,
            steps=global_step,
            stopped=stopped,
            model=model,
            per_class_acc=final.per_class(self.classes) if final else {},
            history=self.history,
        )

    # ---- reporting: values arrive from the device without the loop waiting for them --------

    def _report(self, wait: bool) -> None:
        for (loss_sum, correct), note, stamp in self.readout.ready(wait):
            kind, epoch, step, global_step = note
            if not math.isfinite(loss_sum):
                raise NonFiniteLoss(
                    f"the loss became NaN or infinite by step {global_step}; lower the speedrun lr "
                    "or use --precision fp32, then start again"
                )
            sample = _Sample(epoch, step, global_step, loss_sum, correct, stamp)
            if kind == "step":
                self._emit_step(sample)
            else:
                self._emit_epoch(sample)
            self.previous = sample

    def _since_previous(self, sample: _Sample) -> tuple[float, float, float]:
        """(loss, accuracy, images per second) over the steps since the previous report."""
        same_epoch = sample.epoch == self.previous.epoch
        loss_before = self.previous.loss if same_epoch else 0.0
        correct_before = self.previous.correct if same_epoch else 0.0
        steps = sample.step - (self.previous.step if same_epoch else 0)
        images = max(steps * self.train.images_per_step, 1)
        seconds = max(self.clock.seconds(self.previous.stamp, sample.stamp), 1e-9)
        moved = (sample.global_step - self.previous.global_step) * self.train.images_per_step
        return (sample.loss - loss_before) / images, (sample.correct - correct_before) / images, moved / seconds

    def _emit_step(self, sample: _Sample) -> None:
        loss, acc, images_per_s = self._since_previous(sample)
        elapsed = time.perf_counter() - self.host_started
        self.emit(
            StepMetrics(
                epoch=sample.epoch,
                step=sample.step,
                steps_per_epoch=self.steps,
                global_step=sample.global_step,
                loss=loss,
                acc=acc,
                lr=self.hyp["lr"] * lr_factor(sample.global_step - 1, self.total_steps, self.hyp),
                images_per_s=images_per_s,
                elapsed_s=elapsed,
                eta_s=elapsed / max(sample.global_step, 1) * (self.total_steps - sample.global_step),
                gpu_memory_mb=gpu_memory_mb(self.train.images.device),
            )
        )
        if self.run_dir is not None:
            runs.append_metrics(self.run_dir, {
                "type": "step", "epoch": sample.epoch, "step": sample.step,
                "global_step": sample.global_step, "loss": loss, "acc": acc,
            })

    def _emit_epoch(self, sample: _Sample) -> None:
        images = max(self.steps * self.train.images_per_step, 1)
        train_loss, train_acc = sample.loss / images, sample.correct / images
        epoch_train_s = self.clock.seconds(self.epoch_end_stamps[sample.epoch - 1], sample.stamp)
        evaluation = self.evaluations.get(sample.epoch)
        if evaluation is not None:
            best = max(self.shown_test[2], evaluation.tta_acc)
            self.shown_test = (evaluation.loss, evaluation.tta_acc, best)
        test_loss, test_acc, best_acc = self.shown_test
        epoch_s = epoch_train_s + (evaluation.seconds if evaluation else 0.0)
        per_class = evaluation.per_class(self.classes) if evaluation else {}
        lr = self.hyp["lr"] * lr_factor(sample.global_step - 1, self.total_steps, self.hyp)
        record = {
            "type": "epoch", "epoch": sample.epoch, "global_step": sample.global_step,
            "train_loss": train_loss, "train_acc": train_acc,
            "test_loss": test_loss, "test_acc": test_acc, "evaluated": evaluation is not None,
            "test_acc_plain": evaluation.acc if evaluation else None,
            "lr": lr, "images_per_s": images / max(epoch_train_s, 1e-9), "epoch_s": epoch_s,
            "elapsed_s": time.perf_counter() - self.host_started, "per_class_acc": per_class,
        }
        self.history.append(record)
        if self.run_dir is not None:
            runs.append_metrics(self.run_dir, record)
        self.emit(
            EpochMetrics(
                epoch=sample.epoch,
                epochs=self.epochs,
                global_step=sample.global_step,
                train_loss=train_loss,
                train_acc=train_acc,
                test_loss=test_loss,
                test_acc=test_acc,
                best_acc=best_acc,
                lr=lr,
                images_per_s=record["images_per_s"],
                epoch_s=epoch_s,
                elapsed_s=record["elapsed_s"],
                eta_s=epoch_s * (self.epochs - sample.epoch),
                per_class_acc=per_class,
            )
        )
        self.epoch_end_stamps[sample.epoch] = sample.stamp


@dataclass
class _Sample:
    """Running totals of one epoch as read back from the device at one point in the run."""

    epoch: int  # 1-based
    step: int  # steps done in this epoch
    global_step: int
    loss: float  # summed (label-smoothed) loss so far this epoch
    correct: float  # correct predictions so far this epoch
    stamp: Any  # the device-timeline stamp taken when the totals were sent


# =============================================================================================
# Summaries
# =============================================================================================


def _recipe_line(hyp: dict[str, Any], config: RunConfig, train_size: int, amp_dtype, compiled: bool) -> str:
    precision = {None: "fp32", torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast"}[amp_dtype]
    steps = steps_per_epoch(train_size, hyp["batch_size"])
    return (
        f"speedrun recipe: {config.epochs} epochs x {steps} steps of {min(hyp['batch_size'], train_size)}, "
        f"Nesterov lr {hyp['lr']:g} per 1024 examples (momentum {hyp['momentum']:g}), "
        f"label smoothing {hyp['label_smoothing']:g}, translate {hyp['translate']} px + alternating flip, "
        f"TTA level {hyp['tta_level']}, {precision}{', compiled' if compiled else ''}; "
        "the form's optimizer, lr, batch size and augmentation settings are not used"
    )


def _write_summary(run_dir: Path, result: SpeedrunResult, config: RunConfig, hyp: dict[str, Any]) -> None:
    summary = {
        "tta_acc": result.tta_acc,
        "acc": result.acc,
        "test_loss": result.test_loss,
        "train_eval_s": result.train_eval_s,
        "data_s": result.data_s,
        "compile_s": result.compile_s,
        "epochs": result.epochs,
        "steps": result.steps,
        "stopped": result.stopped,
        "seed": config.seed,
        "precision": config.precision,
        "compile": config.compile,
        "hyperparameters": {key: list(v) if isinstance(v, tuple) else v for key, v in hyp.items()},
    }
    runs.write_text_atomic(Path(run_dir) / "speedrun.json", json.dumps(summary, indent=2) + "\n")
