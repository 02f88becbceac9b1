"""The speedrun recipe on the CPU through the one engine: tiny data, small widths, the real code paths."""

from __future__ import annotations

import threading

import pytest
import torch
import torch.nn.functional as F

from tests.support.events import SkewedClock
from workbench.core import checkpoint as ckpt
from workbench.core import runs
from workbench.core.config import RunConfig
from workbench.core.data.load import load_dataset
from workbench.core.data.shapes import CLASSES as SHAPE_CLASSES
from workbench.core.data.types import Dataset, Split
from workbench.core.events import (
    EpochMetrics,
    Failed,
    Finished,
    Notice,
    RunStarted,
    StatusChanged,
    StepMetrics,
)
from workbench.core.models.speedrun import Speedrun
from workbench.core.speedrun import recipe as sr
from workbench.core.training import report
from workbench.core.training.augment import translate
from workbench.core.training.batches import DeviceBatches
from workbench.core.training.control import TrainControl
from workbench.core.training.engine import fit
from workbench.core.training.loop import evaluate
from workbench.core.training.parts import PLAIN

CPU = torch.device("cpu")
# Small enough for two loaded CPU cores; the recipe itself is unchanged.
SMALL = dict(widths=(16, 32, 32), eval_batch_size=256, whiten_samples=1024)
TINY = dict(widths=(8, 16, 16), eval_batch_size=64, whiten_samples=64)


def config(tmp_path=None, **changes) -> RunConfig:
    values = dict(dataset="shapes", arch="speedrun", recipe="speedrun", epochs=2, device="cpu", seed=0,
                  batch_size=128, val_fraction=0.0)
    if tmp_path is not None:
        values |= dict(runs_dir=str(tmp_path / "runs"), data_dir=str(tmp_path / "data"))
    return RunConfig.from_mapping({**values, **changes})


def subset(data: Dataset, train: int, test: int) -> Dataset:
    def cut(split: Split, n: int) -> Split:
        return Split(split.images[:n].contiguous(), split.labels[:n].contiguous(), None)

    return Dataset(data.name, data.classes, cut(data.train, train), cut(data.test, test), data.mean, data.std)


def random_data(train: int = 256, test: int = 64, size: int = 16) -> Dataset:
    generator = torch.Generator().manual_seed(0)

    def split(n: int) -> Split:
        images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=generator)
        return Split(images, torch.randint(0, 10, (n,), generator=generator), None)

    return Dataset("random", [str(k) for k in range(10)], split(train), split(test), (0.5,) * 3, (0.29,) * 3)


class Recorder(list):
    """An event sink that keeps every event, in order."""

    def __call__(self, event) -> None:
        self.append(event)

    def of(self, kind):
        return [event for event in self if isinstance(event, kind)]


@pytest.fixture(scope="module")
def shapes(data_dir) -> Dataset:
    return subset(load_dataset("shapes", data_dir=data_dir), train=1024, test=256)


@pytest.fixture(scope="module")
def trained(shapes, tmp_path_factory):
    """One 2-epoch run shared by the tests that only look at its outcome."""
    folder = tmp_path_factory.mktemp("speedrun-run")
    events = Recorder()
    run_dir = fit(config(folder), events, data=shapes, recipe=sr.SpeedrunRecipe(SMALL))
    return run_dir, events


def train_batches(data: Dataset, hyp: dict, batch_size: int, mean=None, std=None) -> DeviceBatches:
    recipe = sr.SpeedrunRecipe(hyp)
    return DeviceBatches(data.train.images, data.train.labels, mean or data.mean, std or data.std, CPU, batch_size,
                         shuffle=True, augment_settings=recipe.augment_settings(config()), seed=3,
                         drop_last=recipe.drop_last)


# ---- the whole run -----------------------------------------------------------------------------


def test_two_epochs_on_shapes_learn_through_the_one_engine(trained):
    run_dir, events = trained
    assert events.of(Failed) == []
    finished = events.of(Finished)[-1]
    assert finished.status == "finished" and finished.epochs_done == 2
    assert finished.steps_done == 2 * (1024 // 128)
    assert finished.final_test_acc > 0.3  # 10 classes: chance is 0.1
    assert finished.best_epoch is None  # no validation split: no selection is made
    assert finished.train_s > 0
    started = events.of(RunStarted)[0]
    assert started.recipe == "speedrun" and started.val_size == 0
    model = ckpt.load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert model["recipe"]["name"] == "speedrun" and model["model_options"]["widths"] == [16, 32, 32]


def test_events_and_rows_follow_the_one_schema(trained):
    run_dir, events = trained
    epochs = events.of(EpochMetrics)
    assert [e.epoch for e in epochs] == [1, 2] and all(e.epochs == 2 for e in epochs)
    # Only the last epoch is evaluated; before it the held-out values are absent, never 0 or NaN.
    assert not epochs[0].evaluated and epochs[0].test_acc is None and epochs[0].per_class_acc == {}
    assert epochs[-1].test_acc == events.of(Finished)[-1].final_test_acc and epochs[-1].per_class_split == "test"
    assert set(epochs[-1].per_class_acc) == set(SHAPE_CLASSES)
    assert 0 <= epochs[-1].extra["test_acc_one_view"] <= 1  # TTA and one view both reported
    # The lr is the optimizer's real rate (the main group's), not a per-1024-examples figure.
    assert all(0 < e.lr < 1 for e in epochs[:1]) and epochs[-1].lr >= 0
    steps = events.of(StepMetrics)
    assert steps and all(1 <= s.step <= s.steps_per_epoch == 8 for s in steps)
    assert [s.global_step for s in steps] == sorted(s.global_step for s in steps)
    order = [(type(e).__name__, e.epoch) for e in events if isinstance(e, (StepMetrics, EpochMetrics))]
    second = [i for i, o in enumerate(order) if o == ("StepMetrics", 2)]
    assert not second or order.index(("EpochMetrics", 1)) < min(second)
    assert any(n.message.startswith("speedrun recipe:") for n in events.of(Notice))
    rows = runs.read_metrics(run_dir)
    assert [r["epoch"] for r in runs.epoch_records(rows)] == [1, 2] and rows[-1]["type"] == "end"


def test_metrics_rows_share_one_schema_across_recipes(trained, tiny, monkeypatch):
    run_dir, _ = trained
    monkeypatch.setattr(report, "SAMPLE_INTERVAL_S", 0.0)  # step rows even from a run this short
    standard = fit(tiny(epochs=1, arch="linear"), lambda event: None)
    for kind in ("step", "epoch", "end"):
        speedrun_keys = {key for row in runs.read_metrics(run_dir) if row["type"] == kind for key in row}
        standard_keys = {key for row in runs.read_metrics(standard) if row["type"] == kind for key in row}
        assert speedrun_keys == standard_keys, kind


def test_whitening_weights_stay_frozen_through_training(trained, shapes):
    run_dir, _ = trained
    state = ckpt.load_checkpoint(run_dir / "checkpoints" / "last.pt")
    model = Speedrun(3, 10, widths=SMALL["widths"])
    model.load_state_dict(state["model"])
    assert not model.whiten.weight.requires_grad
    optimizer = sr.build_optimizer(model, sr.SpeedrunRecipe(SMALL).hyp, 128, CPU)
    assert id(model.whiten.weight) not in {id(p) for g in optimizer.param_groups for p in g["params"]}
    # Exactly the filters the data-dependent init computes from the same images: never moved.
    fresh = Speedrun(3, 10, widths=SMALL["widths"])
    batches = DeviceBatches(shapes.train.images, shapes.train.labels, shapes.mean, shapes.std, CPU, 128, shuffle=True)
    fresh.init_from_data(batches.plain(SMALL["whiten_samples"]))
    assert torch.equal(model.whiten.weight, fresh.whiten.weight)


def test_resume_export_and_predict_work_for_a_speedrun_run(trained, tmp_path):
    from PIL import Image

    from workbench.core.export.bundle import export_run, load_bundle
    from workbench.core.export.predict import predict_files
    from workbench.core.export.verify import verify_run_export

    run_dir, _ = trained
    events = Recorder()
    fit(config(tmp_path, epochs=3), events, resume_dir=run_dir, recipe=sr.SpeedrunRecipe(SMALL),
        data=subset(load_dataset("shapes", data_dir=tmp_path / "data"), train=1024, test=256))
    assert events.of(Failed) == [] and [e.epoch for e in events.of(EpochMetrics)] == [3]
    export_run(run_dir, ("safetensors", "pt2"))
    results, _ = verify_run_export(run_dir, ("safetensors", "pt2"))
    assert all(result.passed for result in results)
    model, meta = load_bundle(run_dir)
    assert meta["recipe"] == "speedrun" and meta["model_options"]["widths"] == [16, 32, 32]
    image = tmp_path / "one.png"
    Image.new("RGB", (32, 32), (200, 30, 30)).save(image)
    (prediction,) = predict_files(run_dir / "export", [str(image)], top=3).results
    assert len(prediction.top) == 3 and abs(sum(p for _, p, _ in prediction.top)) <= 1.0 + 1e-6


def test_the_preset_and_arch_speedrun_alone_both_train_through_fit(tiny):
    from workbench.core.presets import preset_config

    base = tiny()
    preset = preset_config("cifar10-speedrun").replace(
        dataset="shapes", epochs=1, device="cpu", compile=False, precision="fp32", batch_size=512,
        data_dir=base.data_dir, runs_dir=base.runs_dir, clip_grad_norm=5.0,
    )
    assert preset.recipe == "speedrun" and preset.val_fraction == 0
    events = Recorder()
    fit(preset, events, recipe=sr.SpeedrunRecipe(TINY), data=random_data(train=1024))
    assert events.of(Finished) and events.of(Finished)[-1].status == "finished", events[-1]
    # A setting given that this recipe does not read is said, not silently recorded as if it acted.
    assert any("speedrun recipe does not read --clip-grad-norm 5" in n.message for n in events.of(Notice))

    # --arch speedrun under the standard recipe: the network still gets its whitening from the data.
    events = Recorder()
    run_dir = fit(tiny(arch="speedrun", epochs=1, batch_size=128), events, data=random_data(train=512, size=16))
    assert events.of(Finished)[-1].status == "finished", events[-1]
    weights = ckpt.load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]["whiten.weight"]
    assert weights.abs().sum() > 0 and torch.isfinite(weights).all()
    cov_rank = torch.linalg.matrix_rank(weights.flatten(1)[:12].double())
    assert cov_rank == 12  # whitening filters, not the random init's scale


def test_the_speedrun_recipe_refuses_other_networks(tiny):
    events = Recorder()
    fit(tiny(recipe="speedrun", arch="basic_cnn"), events)
    failed = events.of(Failed)[-1]
    assert failed.bad_input and failed.field == "arch" and "speedrun network" in failed.reason


# ---- augmentation ------------------------------------------------------------------------------


def test_alternating_flip_flips_complementary_sets_on_consecutive_epochs():
    data = random_data(train=512)
    # mean 0 and std 1/255 make the "normalised" batches equal to the raw pixels.
    batches = train_batches(data, {"translate": 0}, 64, mean=(0.0,) * 3, std=(1 / 255,) * 3)

    def mirrored(epoch: int) -> torch.Tensor:
        """Which images the batches of `epoch` show mirrored, read from the pixels themselves."""
        order = batches.epoch_order()
        flags = torch.full((len(data.train),), -1)
        for step, batch in enumerate(batches.batches(order, 0, epoch)):
            positions = order[step * 64 : (step + 1) * 64]
            assert torch.equal(batch.labels, data.train.labels[positions])
            pixels = batch.images.round().to(torch.uint8)
            originals = data.train.images[positions]
            same = (pixels == originals).flatten(1).all(1)
            mirror = (pixels == originals.flip(-1)).flatten(1).all(1)
            assert bool((same ^ mirror).all())  # each image exactly as it is, or mirrored
            flags[positions] = mirror.long()
        return flags

    epochs = [mirrored(epoch) for epoch in (1, 2, 3)]
    assert all(bool((flags >= 0).all()) for flags in epochs)  # every image seen every epoch
    assert 0.4 < epochs[0].float().mean() < 0.6
    assert torch.equal(epochs[1], 1 - epochs[0]) and torch.equal(epochs[2], 1 - epochs[1])


def test_translate_matches_reflect_pad_crop_and_mirror():
    generator = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (40, 3, 9, 7), dtype=torch.uint8, generator=generator)
    shifts = torch.randint(-2, 3, (40, 2), generator=generator)
    flips = torch.rand(40, generator=generator) < 0.5
    result = translate(images, shifts, flips)
    padded = F.pad(images.float(), [2] * 4, mode="reflect")
    for i in range(40):
        dy, dx = (2 + shifts[i]).tolist()
        expected = padded[i, :, dy : dy + 9, dx : dx + 7]
        expected = expected.flip(-1) if flips[i] else expected
        assert torch.equal(result[i].float(), expected), i


def test_translations_stay_within_the_configured_pixels():
    data = random_data(train=64, size=8)
    batches = train_batches(data, {"alternating_flip": False}, 64, mean=(0.0,) * 3, std=(1 / 255,) * 3)
    order = batches.epoch_order()
    (batch,) = list(batches.batches(order))
    originals = data.train.images[order].float()
    for i in range(64):
        candidates = [translate(originals[i : i + 1], torch.tensor([[dy, dx]]), torch.tensor([flip]))
                      for dy in range(-2, 3) for dx in range(-2, 3) for flip in (False, True)]
        assert any(torch.equal(batch.images[i : i + 1].round(), c) for c in candidates), i


# ---- evaluation --------------------------------------------------------------------------------


def test_tta_evaluation_is_deterministic_in_eval_mode_and_restores_the_mode():
    data = random_data(test=100)
    torch.manual_seed(0)
    model = Speedrun(3, 10, widths=(8, 16, 16))
    plain_batches = DeviceBatches(data.train.images, data.train.labels, data.mean, data.std, CPU, 64, shuffle=False)
    model.init_from_data(plain_batches.plain(64))
    with torch.no_grad():  # BatchNorm statistics far from their (0, 1) defaults
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
    model.train()
    stats = {k: v.clone() for k, v in model.state_dict().items()}

    def test_batches(size):
        return DeviceBatches(data.test.images, data.test.labels, data.mean, data.std, CPU, size, shuffle=False)

    views = sr.tta_views(2)
    first = evaluate(model, test_batches(32), 10, views=views)
    second = evaluate(model, test_batches(64), 10, views=views)
    assert model.training  # the caller's mode comes back
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in stats.items())  # no train-mode pass
    assert (first.acc, first.plain_acc) == (second.acc, second.plain_acc)
    assert first.loss == pytest.approx(second.loss, rel=1e-6)
    assert torch.equal(first.preds, second.preds) and int(first.confusion.sum()) == 100
    plain = evaluate(model, test_batches(100), 10, views=PLAIN)
    assert plain.acc == plain.plain_acc == first.plain_acc
    model.eval()
    with torch.no_grad():
        expected = model(test_batches(100).normalize(data.test.images)).argmax(1)
    assert torch.equal(plain.preds, expected)


def test_tta_views_weights_sum_to_one():
    for level in (0, 1, 2):
        assert sum(view.weight for view in sr.tta_views(level)) == pytest.approx(1.0)
    assert len(sr.tta_views(2)) == 6
    with pytest.raises(ValueError):
        sr.tta_views(3)


# ---- optimisation ------------------------------------------------------------------------------


def test_lr_schedule_warms_up_then_decays_linearly():
    hyp = sr.HYPERPARAMETERS
    total = 100
    factors = [sr.lr_factor(step, total, hyp) for step in range(total + 1)]
    peak = factors.index(max(factors))
    assert factors[0] == pytest.approx(hyp["lr_start"]) and max(factors) == pytest.approx(1.0)
    assert peak == int(hyp["warmup"] * total)
    assert factors[-1] == pytest.approx(hyp["lr_end"])
    assert all(a <= b for a, b in zip(factors[:peak], factors[1 : peak + 1]))
    assert all(a >= b for a, b in zip(factors[peak:], factors[peak + 1 :]))


def test_optimizer_groups_schedule_and_the_frozen_whitening_bias():
    model = Speedrun(3, 10, widths=(8, 16, 16))
    recipe = sr.SpeedrunRecipe()
    parts = recipe.build(model, config(epochs=5), CPU, steps_per_epoch=10, batch_size=256, done_steps=0)
    groups = {g["name"]: g for g in parts.optimizer.param_groups}
    assert parts.optimizer.param_groups[0]["name"] == "weights"  # the lr the run reports
    assert groups["bn_biases"]["lr"] == pytest.approx(groups["weights"]["lr"] * recipe.hyp["bias_lr_scale"])
    products = {name: g["initial_lr"] * g["weight_decay"] for name, g in groups.items()}
    assert len({round(v, 12) for v in products.values()}) == 1  # every group decays alike
    # lr per 1024 examples: doubling the batch doubles PyTorch's lr for the mean loss.
    wider = recipe.build(Speedrun(3, 10, widths=(8, 16, 16)), config(epochs=5), CPU, 10, 512, 0)
    assert wider.optimizer.param_groups[0]["initial_lr"] == pytest.approx(2 * groups["weights"]["initial_lr"])
    for _ in range(recipe.hyp["whiten_bias_epochs"] * 10):
        parts.optimizer.step()
        parts.scheduler.step()
    lrs = {g["name"]: g["lr"] for g in parts.optimizer.param_groups}
    assert lrs["whiten_bias"] == 0.0 and lrs["weights"] > 0
    assert all(not m.weight.requires_grad for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_lookahead_pulls_weights_towards_the_slow_copy_and_saves_them():
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    lookahead = sr.Lookahead(model, sr.HYPERPARAMETERS, total_steps=100)
    with torch.no_grad():
        model.weight.fill_(3.0)
    lookahead.update(0.75)  # slow = 0.75 * 1 + 0.25 * 3 = 1.5, and the fast weights follow
    assert torch.allclose(model.weight, torch.full((1, 2), 1.5))
    saved = lookahead.state_dict()
    lookahead.update(0.0)
    assert torch.allclose(model.weight, torch.full((1, 2), 1.5))
    other = sr.Lookahead(model, sr.HYPERPARAMETERS, total_steps=100)
    other.load_state_dict(saved)
    assert torch.equal(other.slow[0], torch.full((1, 2), 1.5))


# ---- control -----------------------------------------------------------------------------------


def test_stop_between_steps_ends_without_evaluation_and_keeps_a_checkpoint(monkeypatch, tmp_path):
    monkeypatch.setattr(report, "SAMPLE_INTERVAL_S", 0.0)  # a StepMetrics after every step
    control = TrainControl()
    events = Recorder()

    def sink(event):
        events.append(event)
        if isinstance(event, StepMetrics):
            control.stop()

    run_dir = fit(config(tmp_path, epochs=3, batch_size=32), sink, control, data=random_data(),
                  recipe=sr.SpeedrunRecipe(TINY))
    finished = events.of(Finished)[-1]
    assert finished.status == "stopped" and finished.steps_done == 1 and finished.epochs_done == 0
    assert not finished.evaluated and "no evaluation happened" in finished.summary()
    assert events.of(EpochMetrics) == []
    assert (run_dir / "checkpoints" / "last.pt").is_file()


def test_pause_holds_training_and_does_not_count(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "SAMPLE_INTERVAL_S", 0.0)  # a StepMetrics after every step
    control = TrainControl()
    events = Recorder()
    timers = []
    clock = SkewedClock(monkeypatch)  # the pause lasts an hour by the clock the engine reads

    def resume():
        clock.jump()
        control.resume()

    def sink(event):
        events(event)
        if isinstance(event, StepMetrics) and not timers:  # pause after the first step
            control.pause()
            timers.append(threading.Timer(0.2, resume))
            timers[0].start()

    fit(config(tmp_path, epochs=1, batch_size=32), sink, control, data=random_data(), recipe=sr.SpeedrunRecipe(TINY))
    timers[0].join()
    finished = events.of(Finished)[-1]
    assert finished.status == "finished" and finished.final_test_acc is not None
    paused, going_on = events.of(StatusChanged)
    assert (paused.status, going_on.status) == ("paused", "running")  # the trainer said when it halted
    held = events[events.index(paused):events.index(going_on)]
    assert not [e for e in held if isinstance(e, (StepMetrics, EpochMetrics))]  # nothing trained in between
    assert finished.elapsed_s < clock.jump_s  # the hour paused is not in the run's time


def test_out_of_memory_rebuilds_the_speedrun_for_the_smaller_batch(tmp_path, monkeypatch):
    """After a halving the speedrun's lr is sized for the new batch and its lookahead decay
    never passes its peak (both were computed from the batch size when the run was built)."""
    original = torch.nn.Conv2d.forward

    def forward(self, x):
        if torch.is_grad_enabled() and self.training and x.shape[0] > 16:  # training steps only
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return original(self, x)

    decays = []
    update = sr.Lookahead.update
    monkeypatch.setattr(sr.Lookahead, "update", lambda self, decay: (decays.append(decay), update(self, decay)))
    monkeypatch.setattr(torch.nn.Conv2d, "forward", forward)
    events = Recorder()
    run_dir = fit(config(tmp_path, epochs=2, batch_size=32), events, data=random_data(),
                  recipe=sr.SpeedrunRecipe(TINY))
    assert events.of(Finished)[-1].status == "finished", events.of(Failed)
    assert any("retrying the epoch with 16" in n.message for n in events.of(Notice))
    state = ckpt.load_checkpoint(run_dir / "checkpoints" / "last.pt", map_location="cpu")
    weights = next(g for g in state["optimizer"]["param_groups"] if g.get("name") == "weights")
    momentum = sr.HYPERPARAMETERS["momentum"]
    assert weights["peak_lr"] == pytest.approx(sr.HYPERPARAMETERS["lr"] * (1 - momentum) / 1024 * 16)
    peak = sr.HYPERPARAMETERS["lookahead_decay"] ** sr.HYPERPARAMETERS["lookahead_every"]
    assert decays and max(decays) <= peak + 1e-12


def test_divergence_fails_with_a_sentence(tmp_path):
    events = Recorder()
    fit(config(tmp_path, epochs=1, batch_size=32), events, data=random_data(),
        recipe=sr.SpeedrunRecipe({**TINY, "lr": 1e30}))
    assert "NaN or infinite" in events.of(Failed)[-1].reason


def test_unknown_hyperparameter_and_fp16_on_cpu_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown speedrun hyperparameter"):
        sr.SpeedrunRecipe({"lr_max": 1})
    events = Recorder()
    fit(config(tmp_path, precision="fp16"), events, data=random_data(), recipe=sr.SpeedrunRecipe(TINY))
    failed = events.of(Failed)[-1]
    assert failed.bad_input and failed.field == "precision" and "fp16" in failed.reason


def test_bf16_autocast_runs_on_the_cpu(tmp_path):
    events = Recorder()
    run_dir = fit(config(tmp_path, epochs=1, precision="bf16", batch_size=32), events,
                  data=random_data(train=64, test=32), recipe=sr.SpeedrunRecipe(TINY))
    assert events.of(Finished)[-1].final_test_acc is not None, events[-1]
    weights = ckpt.load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]
    assert weights["head.weight"].dtype == torch.float32


def test_steps_per_epoch_uses_full_batches_only_and_says_what_it_leaves_out():
    data = random_data(train=100)
    batches = train_batches(data, {}, 32)
    assert len(batches) == 3 and "the last 4 images of each shuffled epoch" in batches.split_note()
    assert len(train_batches(data, {}, 1024)) == 1  # one ragged batch when the split is smaller
