"""The cifar10-speedrun recipe on the CPU: tiny data, small widths, the real code paths."""

from __future__ import annotations

import json
import threading

import pytest
import torch
import torch.nn.functional as F

from workbench.core import runs
from workbench.core import speedrun_data as srd
from workbench.core import speedrun_train as sr
from workbench.core.config import RunConfig
from workbench.core.control import TrainControl
from workbench.core.data import Dataset, Split, load_dataset
from workbench.core.events import EpochMetrics, Notice, RunStarted, StepMetrics
from workbench.core.models.speedrun import Speedrun
from workbench.core.shapes import CLASSES as SHAPE_CLASSES
from workbench.core.steps import NonFiniteLoss

CPU = torch.device("cpu")
# Small enough for two loaded CPU cores; the recipe itself is unchanged.
SMALL = dict(widths=(16, 32, 32), batch_size=128, eval_batch_size=256, whiten_samples=1024)


def config(**changes) -> RunConfig:
    values = dict(dataset="shapes", arch="speedrun", epochs=2, device="cpu", seed=0)
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
    run_dir = tmp_path_factory.mktemp("speedrun-run")
    events = Recorder()
    result = sr.fit_speedrun(config(), events, TrainControl(), shapes, CPU, run_dir, hyperparameters=SMALL)
    return result, events, run_dir


# ---- the whole run -----------------------------------------------------------------------------


def test_two_epochs_on_shapes_learn_and_return_an_eval_mode_model(trained):
    result, _, _ = trained
    assert not result.stopped and result.epochs == 2
    assert result.steps == 2 * (1024 // 128)
    assert result.tta_acc > 0.3 and result.acc > 0.25  # 10 classes: chance is 0.1
    assert result.test_loss is not None and result.test_loss > 0
    assert not result.model.training and isinstance(result.model, Speedrun)
    assert result.train_eval_s > 0 and result.compile_s == 0.0 and result.data_s >= 0
    assert set(result.per_class_acc) == set(SHAPE_CLASSES)


def test_events_follow_the_engine_shapes(trained):
    result, events, run_dir = trained
    assert events.of(RunStarted) == []  # the engine's job
    epochs = events.of(EpochMetrics)
    assert [e.epoch for e in epochs] == [1, 2] and all(e.epochs == 2 for e in epochs)
    # Only the last epoch is evaluated; before it the test values are placeholders, never NaN.
    assert epochs[0].test_acc == 0.0 and epochs[0].per_class_acc == {}
    assert epochs[-1].test_acc == result.tta_acc and epochs[-1].best_acc == result.tta_acc
    assert set(epochs[-1].per_class_acc) == set(SHAPE_CLASSES)
    assert all(e.train_loss == e.train_loss and 0 <= e.train_acc <= 1 for e in epochs)
    steps = events.of(StepMetrics)
    assert steps and all(1 <= s.step <= s.steps_per_epoch == 8 for s in steps)
    assert [s.global_step for s in steps] == sorted(s.global_step for s in steps)
    assert len(steps) <= result.train_eval_s / sr.STEP_SAMPLE_S + 2
    # Every EpochMetrics follows the StepMetrics of its own epoch and precedes the next epoch's.
    order = [(type(e).__name__, e.epoch) for e in events if isinstance(e, (StepMetrics, EpochMetrics))]
    assert order.index(("EpochMetrics", 1)) < min(i for i, o in enumerate(order) if o == ("StepMetrics", 2))
    notices = [n.message for n in events.of(Notice)]
    assert any(m.startswith("speedrun recipe:") for m in notices)
    assert any("with TTA" in m for m in notices)

    records = runs.epoch_records(runs.read_metrics(run_dir))
    assert [r["epoch"] for r in records] == [1, 2] and records[-1]["test_acc"] == result.tta_acc
    summary = json.loads((run_dir / "speedrun.json").read_text())
    assert summary["tta_acc"] == result.tta_acc and summary["epochs"] == 2


def test_whitening_weights_stay_frozen_through_training(trained, shapes):
    result, _, _ = trained
    model = result.model
    assert not model.whiten.weight.requires_grad
    optimizer = sr.build_optimizer(model, {**sr.HYPERPARAMETERS, **SMALL})
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert id(model.whiten.weight) not in in_optimizer
    # Exactly the filters init_whitening computes from the same images: training never moved them.
    fresh = Speedrun(3, 10, widths=SMALL["widths"])
    images = srd.TrainImages(shapes.train.images, shapes.train.labels, shapes.mean, shapes.std, CPU,
                            {**sr.HYPERPARAMETERS, **SMALL}, seed=0)
    fresh.init_whitening(images.plain(SMALL["whiten_samples"]))
    assert torch.equal(model.whiten.weight, fresh.whiten.weight)


# ---- augmentation ------------------------------------------------------------------------------


def test_alternating_flip_flips_complementary_sets_on_consecutive_epochs():
    data = random_data(train=512)
    hyp = {**sr.HYPERPARAMETERS, "translate": 0, "batch_size": 64}
    # mean 0 and std 1/255 make the "normalised" batches equal to the raw pixels.
    train = srd.TrainImages(data.train.images, data.train.labels, (0.0,) * 3, (1 / 255,) * 3, CPU, hyp, seed=3)
    assert 0.4 < train.flips(0).float().mean() < 0.6
    for epoch in range(3):
        assert torch.equal(train.flips(epoch + 1), ~train.flips(epoch))

    def mirrored(epoch: int) -> torch.Tensor:
        """Which images the batches of `epoch` show mirrored, read from the pixels themselves."""
        state = train.generator.get_state()
        order, _, _ = train.epoch_plan(epoch)  # the same draw batches() is about to make
        train.generator.set_state(state)
        flags = torch.full((len(train),), -1)
        for step, (images, labels) in enumerate(train.batches(epoch)):
            positions = order[step * 64 : (step + 1) * 64]
            assert torch.equal(labels, data.train.labels[positions])
            pixels = images.round().to(torch.uint8)
            originals = data.train.images[positions]
            same = (pixels == originals).flatten(1).all(1)
            mirror = (pixels == originals.flip(-1)).flatten(1).all(1)
            assert bool((same ^ mirror).all())  # each image exactly as it is, or mirrored
            flags[positions] = mirror.long()
        return flags

    epochs = [mirrored(epoch) for epoch in range(3)]
    assert all(bool((flags >= 0).all()) for flags in epochs)  # every image seen every epoch
    assert torch.equal(epochs[1], 1 - epochs[0]) and torch.equal(epochs[2], 1 - epochs[1])
    assert torch.equal(epochs[0].bool(), train.flips(0))


def test_translate_and_flip_matches_reflect_pad_crop_and_mirror():
    generator = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (40, 3, 9, 7), dtype=torch.uint8, generator=generator)
    shifts = torch.randint(-2, 3, (40, 2), generator=generator)
    flips = torch.rand(40, generator=generator) < 0.5
    result = srd.translate_and_flip(images, shifts, flips)
    padded = F.pad(images.float(), [2] * 4, mode="reflect")
    for i in range(40):
        dy, dx = (2 + shifts[i]).tolist()
        expected = padded[i, :, dy : dy + 9, dx : dx + 7]
        expected = expected.flip(-1) if flips[i] else expected
        assert torch.equal(result[i].float(), expected), i


def test_translations_stay_within_the_configured_pixels():
    train = srd.TrainImages(*_raw(random_data()), CPU, sr.HYPERPARAMETERS, seed=0)
    _, shifts, _ = train.epoch_plan(0)
    assert shifts.min() == -2 and shifts.max() == 2


def _raw(data: Dataset):
    return data.train.images, data.train.labels, data.mean, data.std


# ---- evaluation --------------------------------------------------------------------------------


def test_tta_evaluation_is_deterministic_in_eval_mode_and_restores_the_mode():
    data = random_data(test=100)
    torch.manual_seed(0)
    model = sr.build_model(3, 10, {**sr.HYPERPARAMETERS, "widths": (8, 16, 16)}, CPU)
    model.init_whitening(srd.TrainImages(*_raw(data), CPU, sr.HYPERPARAMETERS, seed=0).plain(64))
    with torch.no_grad():  # BatchNorm statistics far from their (0, 1) defaults
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
    model.train()
    stats = {k: v.clone() for k, v in model.state_dict().items()}
    test = srd.TestImages(data.test.images, data.test.labels, data.mean, data.std, CPU)
    first = srd.evaluate_tta(model, test, level=2, batch_size=32, amp_dtype=None)
    second = srd.evaluate_tta(model, test, level=2, batch_size=64, amp_dtype=None)
    assert model.training  # the caller's mode comes back
    # A train-mode pass would have moved the running statistics.
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in stats.items())
    assert (first.tta_acc, first.acc) == (second.tta_acc, second.acc)
    assert first.loss == pytest.approx(second.loss, rel=1e-6)
    assert torch.equal(first.preds, second.preds) and int(first.confusion.sum()) == 100
    plain = srd.evaluate_tta(model, test, level=0, batch_size=100, amp_dtype=None)
    assert plain.tta_acc == plain.acc == first.acc
    model.eval()
    with torch.no_grad():
        expected = model(test.normalize(test.images)).argmax(1)
    assert torch.equal(plain.preds, expected)


def test_tta_views_weights_sum_to_one():
    for level in (0, 1, 2):
        views = srd.tta_views(level)
        assert sum(weight for weight, _, _ in views) == pytest.approx(1.0)
    assert len(srd.tta_views(2)) == 6
    with pytest.raises(ValueError):
        srd.tta_views(3)


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


def test_optimizer_gives_bn_biases_a_higher_lr_and_every_group_the_same_decay():
    model = Speedrun(3, 10, widths=(8, 16, 16))
    hyp = sr.HYPERPARAMETERS
    groups = {g["name"]: g for g in sr.build_optimizer(model, hyp).param_groups}
    assert groups["bn_biases"]["lr"] == pytest.approx(groups["weights"]["lr"] * hyp["bias_lr_scale"])
    products = {name: g["lr"] * g["weight_decay"] for name, g in groups.items()}
    assert len({round(v, 12) for v in products.values()}) == 1
    optimizer = sr.build_optimizer(model, hyp)
    sr.set_lr(optimizer, 0.5, whiten_bias_frozen=True)
    lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert lrs["whiten_bias"] == 0.0 and lrs["weights"] == pytest.approx(0.5 * groups["weights"]["lr"])
    # BatchNorm scales are frozen at 1, so only their biases train.
    assert all(not m.weight.requires_grad for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_lookahead_pulls_weights_towards_the_slow_copy():
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    lookahead = sr.Lookahead(model)
    with torch.no_grad():
        model.weight.fill_(3.0)
    lookahead.update(0.75)  # slow = 0.75 * 1 + 0.25 * 3 = 1.5, and the fast weights follow
    assert torch.allclose(model.weight, torch.full((1, 2), 1.5))
    lookahead.update(0.0)
    assert torch.allclose(model.weight, torch.full((1, 2), 1.5))


# ---- control -----------------------------------------------------------------------------------

TINY = dict(widths=(8, 16, 16), batch_size=32, eval_batch_size=64, whiten_samples=64)


def test_stop_between_steps_ends_without_evaluation(monkeypatch):
    monkeypatch.setattr(sr, "STEP_SAMPLE_S", 0.0)  # a StepMetrics after every step
    control = TrainControl()
    events = Recorder()

    def sink(event):
        events.append(event)
        if isinstance(event, StepMetrics):
            control.stop()

    result = sr.fit_speedrun(config(epochs=3), sink, control, random_data(), CPU, None, hyperparameters=TINY)
    assert result.stopped and result.steps == 1 and result.epochs == 0
    assert result.tta_acc is None and result.acc is None
    assert events.of(EpochMetrics) == []
    assert not result.model.training


def test_pause_holds_training_until_resumed():
    control = TrainControl()
    control.pause()
    timer = threading.Timer(0.5, control.resume)
    timer.start()
    events = Recorder()
    result = sr.fit_speedrun(config(epochs=1), events, control, random_data(), CPU, None, hyperparameters=TINY)
    timer.join()
    assert not result.stopped and result.epochs == 1 and result.tta_acc is not None
    assert result.train_eval_s >= 0.5


def test_divergence_raises_non_finite_loss():
    with pytest.raises(NonFiniteLoss, match="NaN or infinite"):
        sr.fit_speedrun(config(epochs=1), Recorder(), TrainControl(), random_data(), CPU, None,
                        hyperparameters={**TINY, "lr": 1e30})


def test_unknown_hyperparameter_and_fp16_on_cpu_are_refused():
    from workbench.core.errors import WorkbenchError

    with pytest.raises(ValueError, match="unknown speedrun hyperparameter"):
        sr.fit_speedrun(config(), Recorder(), TrainControl(), random_data(), CPU, None, hyperparameters={"lr_max": 1})
    with pytest.raises(WorkbenchError, match="fp16"):
        sr.fit_speedrun(config(precision="fp16"), Recorder(), TrainControl(), random_data(), CPU, None)


def test_bf16_autocast_runs_on_the_cpu():
    result = sr.fit_speedrun(config(epochs=1, precision="bf16"), Recorder(), TrainControl(),
                             random_data(train=64, test=32), CPU, None, hyperparameters=TINY)
    assert result.tta_acc is not None and result.model.head.weight.dtype == torch.float32


def test_steps_per_epoch_uses_full_batches_only():
    assert sr.steps_per_epoch(50_000) == 48
    assert sr.steps_per_epoch(100, 1024) == 1


def test_warm_up_leaves_weights_statistics_and_random_state_as_they_were():
    data = random_data()
    hyp = {**sr.HYPERPARAMETERS, **TINY}
    torch.manual_seed(0)
    model = sr.build_model(3, 10, hyp, CPU)
    train = srd.TrainImages(*_raw(data), CPU, hyp, seed=0)
    test = srd.TestImages(data.test.images, data.test.labels, data.mean, data.std, CPU)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    random_state = train.generator.get_state()
    sr.warm_up(model, model, train, test, hyp, amp_dtype=None)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert torch.equal(train.generator.get_state(), random_state)


def test_the_preset_runs_through_fit_and_saves_a_checkpoint(tiny, monkeypatch):
    """fit() hands a cifar10-speedrun config to the recipe and keeps the engine's run folder."""
    from tests.conftest import Recorder
    from workbench.core import runs, speedrun_train
    from workbench.core.engine import fit
    from workbench.core.events import Finished, RunStarted
    from workbench.core.presets import preset_config

    narrow = {**speedrun_train.HYPERPARAMETERS, "widths": (8, 16, 16), "batch_size": 512, "whiten_samples": 256}
    monkeypatch.setattr(speedrun_train, "HYPERPARAMETERS", narrow)
    base = tiny()
    config = preset_config("cifar10-speedrun").replace(
        dataset="shapes", epochs=1, device="cpu", compile=False, precision="fp32",
        data_dir=base.data_dir, runs_dir=base.runs_dir,
    )
    recorder = Recorder()
    run_dir = fit(config, recorder)
    assert recorder.of(RunStarted) and recorder.last(Finished).status == "finished", recorder.events[-1]
    assert (run_dir / "checkpoints" / "best.pt").is_file()
    assert runs.read_status(run_dir)[0] == "finished"
    assert recorder.last(Finished).best_acc > 0.1
