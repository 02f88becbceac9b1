"""Training aids: the LR finder, early stopping, the best epoch kept K times, the batch-size finder."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tests.support.events import Recorder
from workbench.cli import main
from workbench.core import checkpoint as ckpt
from workbench.core import runs
from workbench.core.events import EpochMetrics, Finished, Notice
from workbench.core.training.control import TrainControl
from workbench.core.training.early_stop import EarlyStopper
from workbench.core.training.engine import fit
from workbench.core.training.keeper import CheckpointKeeper, kept_epochs
from workbench.core.training.lr_finder import MINIMUM_RULE, lr_find, suggest
from workbench.core.training.preparation import prepare_trial

# ---- the LR finder ---------------------------------------------------------------------------


def _state(trial, parts):
    return (
        {k: v.clone() for k, v in trial.built.model.state_dict().items()},
        json.dumps(parts.optimizer.state_dict()["param_groups"], default=str),
        [t.clone() for s in parts.optimizer.state.values() for t in s.values() if torch.is_tensor(t)],
        torch.get_rng_state().clone(),
        {k: v.clone() for k, v in trial.built.train.state().items()},
    )


def test_the_finder_leaves_model_optimizer_batches_and_rng_exactly_as_they_were(tiny):
    config = tiny(arch="convbn", image_size=12)
    trial = prepare_trial(config, lambda event: None, TrainControl())
    parts = trial.built.parts
    batch = next(trial.built.train.batches(trial.built.train.epoch_order()))
    loss = parts.criterion(trial.built.model(batch.images), batch.labels)
    loss.backward()
    parts.optimizer.step()  # an optimizer with state, as a run's would have
    before = _state(trial, parts)
    curve = lr_find(config, trial.built.model, trial.built.train, trial.recipe, trial.device, steps=20)
    after = _state(trial, parts)
    assert len(curve.lrs) == 20 and curve.lrs[0] == pytest.approx(1e-7) and curve.lrs[-1] == pytest.approx(10.0)
    assert all(torch.equal(before[0][k], after[0][k]) for k in before[0])
    assert before[1] == after[1] and all(torch.equal(a, b) for a, b in zip(before[2], after[2]))
    assert torch.equal(before[3], after[3])
    assert all(torch.equal(before[4][k], after[4][k]) for k in before[4])


def test_an_exploding_range_diverges_and_stops_early(tiny):
    config = tiny(arch="linear", optimizer="sgd", momentum=0.0)
    trial = prepare_trial(config, lambda event: None, TrainControl())
    curve = lr_find(config, trial.built.model, trial.built.train, trial.recipe, trial.device,
                    start_lr=1e-3, end_lr=1e8, steps=60)
    assert curve.ended.startswith("diverged") and len(curve.lrs) < 60


def test_the_suggestion_lies_in_the_descending_part_of_a_curve_and_names_its_rule():
    lrs = [10 ** (-7 + 8 * i / 99) for i in range(100)]
    # flat, a descent between 1e-4 and 1e-2, then a rise
    loss = [2.3 - 1.5 / (1 + math.exp(-3 * (math.log10(lr) + 3))) + 3 * max(0.0, math.log10(lr) + 1.5) ** 2 for lr in lrs]
    suggestion, rule, steepest, minimum_over_10 = suggest(lrs, loss)
    lowest = min(range(100), key=loss.__getitem__)
    assert suggestion == pytest.approx(lrs[lowest] / 10) == pytest.approx(minimum_over_10) and rule == MINIMUM_RULE
    index = min(range(100), key=lambda i: abs(math.log10(lrs[i]) - math.log10(suggestion)))
    assert 0 < index < lowest and loss[index - 5] > loss[index] > loss[lowest]  # on the descent
    assert 1e-4 < suggestion < 1e-2
    steep = lrs.index(steepest)
    assert 0 < steep < lowest and loss[steep - 2] > loss[steep] > loss[lowest]


def test_lr_find_writes_a_png_and_json_and_one_line_for_a_bad_range(tmp_path, data_dir, capsys):
    out = tmp_path / "finder"
    code = main(["lr-find", "--dataset", "shapes", "--arch", "linear", "--device", "cpu", "--steps", "30",
                 "--data-dir", str(data_dir), "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0 and "suggested lr" in text and "lowest smoothed loss / 10" in text
    result = json.loads((out / "lr_find.json").read_text())
    assert 10 < len(result["lrs"]) <= 30 and result["suggestion"] and result["ended"] and (out / "lr_find.png").stat().st_size > 1000
    assert main(["lr-find", "--start-lr", "1", "--end-lr", "0.1"]) == 2


def test_lr_find_refuses_an_output_it_cannot_write_before_the_sweep(tmp_path, data_dir, capsys, monkeypatch):
    from tests.support.cli import one_line_error
    from workbench.core.training import lr_finder

    monkeypatch.setattr(lr_finder, "lr_find", lambda *a, **k: pytest.fail("the sweep ran before the check"))
    (tmp_path / "a-file").write_text("mine\n")
    for out, words in ((tmp_path / "a-file", "is a file, not a folder"),
                       (tmp_path / "a-file" / "below", f"is inside {tmp_path / 'a-file'}, which is a file")):
        error = one_line_error(capsys, ["lr-find", "--dataset", "shapes", "--arch", "linear", "--device", "cpu",
                                        "--data-dir", str(data_dir), "--out", str(out)])
        assert "--out" in error and words in error
    assert (tmp_path / "a-file").read_text() == "mine\n"


# ---- early stopping --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "metric, values, patience, delta, stops_at",
    [
        ("acc", [0.5, 0.6, 0.6, 0.59, 0.7], 2, 0.0, 4),  # two epochs without beating 0.6
        ("acc", [0.5, 0.6, 0.605, 0.61, 0.62], 2, 0.02, 4),  # gains below the delta do not count
        ("loss", [1.0, 0.8, 0.9, 0.7, 0.75, 0.71, 0.72], 3, 0.0, 7),
        ("acc", [0.1, 0.2, 0.3, 0.4], 1, 0.0, None),  # always better: never stops
    ],
)
def test_early_stopping_stops_at_the_right_epoch(metric, values, patience, delta, stops_at):
    stopper = EarlyStopper(patience, metric, delta)
    stopped = next((epoch for epoch, value in enumerate(values, 1) if stopper.update(epoch, value)), None)
    assert stopped == stops_at


def test_an_early_stopped_run_says_why_in_the_log_the_status_and_the_metrics(tiny):
    recorder = Recorder()
    run_dir = fit(tiny(arch="linear", epochs=6, lr=1e-9, early_stop=1), recorder)  # nothing improves
    finished = recorder.last(Finished)
    assert finished.status == "finished" and finished.epochs_done == 2 and finished.final_test_acc is not None
    said = next(n for n in recorder.of(Notice) if n.message.startswith("early stop after epoch 2"))
    epoch_two = next(e for e in recorder.of(EpochMetrics) if e.epoch == 2)
    assert recorder.events.index(epoch_two) < recorder.events.index(said)  # said after the epoch it concerns
    status, reason = runs.read_status(run_dir)
    assert status == "finished" and reason.startswith("early stop after epoch 2")
    assert runs.read_metrics(run_dir)[-1]["reason"] == reason
    assert "finished early" in finished.summary()


# ---- keeping the best epochs ------------------------------------------------------------------


def test_keep_best_keeps_exactly_k_and_never_deletes_best(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    keeper = CheckpointKeeper(folder, keep=3, history=[])
    scores = [0.5, 0.7, 0.6, 0.65, 0.9, 0.55, 0.8, 0.9]
    for epoch, score in enumerate(scores, 1):
        keeper.save({"model": {"w": torch.tensor([float(epoch)])}}, epoch, score)
        best_epoch = max(range(epoch), key=lambda i: (scores[i], -i)) + 1
        assert (folder / "best.pt").is_file()
        assert ckpt.load_checkpoint(folder / "best.pt")["model"]["w"].item() == best_epoch
        ranked = sorted(range(1, epoch + 1), key=lambda e: (-scores[e - 1], e))[:3]
        assert kept_epochs(folder) == sorted(ranked)
    assert kept_epochs(folder) == [5, 7, 8]  # 0.9 (epoch 5 beats the later tie), 0.9, 0.8
    assert ckpt.load_checkpoint(folder / "last.pt")["model"]["w"].item() == 8


def test_a_run_keeps_its_k_best_and_export_takes_any_of_them(tiny, capsys):
    run_dir = fit(tiny(arch="linear", epochs=4, keep_best=2), lambda event: None)
    kept = kept_epochs(run_dir / "checkpoints")
    assert len(kept) == 2
    best = runs.best_of(runs.epoch_records(runs.read_metrics(run_dir)))[2]
    assert best in kept
    for epoch in kept:
        assert main(["export", str(run_dir), "--checkpoint", f"epoch-{epoch}"]) == 0
        assert json.loads((run_dir / "export" / "model.json").read_text())["epoch"] == epoch
    missing = next(e for e in range(1, 5) if e not in kept)
    assert main(["export", str(run_dir), "--checkpoint", f"epoch-{missing}"]) == 2
    err = capsys.readouterr().err
    assert "kept no checkpoint" in err and f"best, last, epoch-{kept[0]}, epoch-{kept[1]}" in err, err


# ---- the batch-size finder ---------------------------------------------------------------------


def test_the_batch_finder_doubles_until_out_of_memory(tiny, monkeypatch):
    from workbench.core.errors import ConfigError
    from workbench.core.models.seed import nn
    from workbench.core.training.batch_finder import find_batch_size

    original = nn.Linear.forward

    def forward(self, x):
        if x.shape[0] > 64:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return original(self, x)

    monkeypatch.setattr(nn.Linear, "forward", forward)
    tried = []
    search = find_batch_size(tiny(arch="linear"), start=16, allow_cpu=True, on_trial=lambda s, ok: tried.append((s, ok)))
    assert search.largest == 64 and tried == [(16, True), (32, True), (64, True), (128, False)]
    with pytest.raises(ConfigError, match="GPU memory"):
        find_batch_size(tiny(arch="linear"))


@pytest.mark.parametrize("flags", [["--end-lr", "inf"], ["--start-lr", "1e20", "--end-lr", "1e21"],
                                   ["--start-lr", "nan"], ["--diverge", "nan"], ["--steps", "100000000"]])
def test_lr_find_bounds_every_range_flag_in_one_line_writing_nothing(flags, tmp_path, capsys):
    from tests.support.cli import one_line_error

    runs_dir = tmp_path / "runs"
    error = one_line_error(capsys, ["lr-find", "--dataset", "shapes", "--arch", "linear", "--device", "cpu",
                                    "--runs-dir", str(runs_dir), "--data-dir", str(tmp_path / "data"), *flags])
    assert any(flag in error for flag in flags if flag.startswith("--"))
    assert not runs_dir.exists() and not (tmp_path / "data").exists()


# ---- progress through a held-out pass -------------------------------------------------------------


def test_a_long_held_out_pass_reports_its_progress_and_a_short_one_says_nothing(monkeypatch):
    import workbench.core.training.report as report
    from workbench.core.events import Evaluating, StepMetrics
    from workbench.core.lifecycle.view import RunView
    from workbench.core.training.control import TrainControl

    clock = [0.0]
    monkeypatch.setattr(report.time, "perf_counter", lambda: clock[0])
    sent = []
    meter = report.Meter(sent.append, torch.device("cpu"), TrainControl(), steps_per_epoch=1, total_steps=1,
                         lr=lambda: 0.1, batch_size=10)
    for at, done in ((0.0, 10), (0.1, 20), (0.2, 30)):  # 0.2 s in all: nothing to follow
        clock[0] = at
        meter.evaluating("val", done, 30)
    assert sent == []
    for at, done in ((1.0, 10), (1.6, 20), (1.8, 25), (2.5, 30)):
        clock[0] = at
        meter.evaluating("test", done, 30)
    assert sent == [Evaluating("test", 20, 30), Evaluating("test", 30, 30)]  # half a second in, then its end
    view = RunView()
    view.apply(sent[0])
    assert view.evaluating == ("test", 20 / 30)
    view.apply(StepMetrics(1, 1, 1, 1, 1.0, 0.5, 0.1, 100.0, 1.0, 0.0))
    assert view.evaluating is None  # training rows again: the pass is over
