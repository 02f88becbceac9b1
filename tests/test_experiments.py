"""Compare and sweep: the settings that differ, JSON, damaged runs, grid expansion and refusal."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from tests.support.cli import run_here
from workbench.core.config import RunConfig
from workbench.core.errors import WorkbenchError
from workbench.core.experiments.compare import compare, read_figures
from workbench.core.experiments.queue import JobQueue
from workbench.core.experiments.sweep import expand
from workbench.core.training.engine import fit


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, data_dir):
    """Two finished linear runs on shapes that differ only in the learning rate."""
    runs_dir = tmp_path_factory.mktemp("compare") / "runs"
    found = []
    for lr in (0.01, 0.003):
        config = RunConfig.from_mapping(dict(dataset="shapes", arch="linear", epochs=2, image_size=12, device="cpu",
                                             lr=lr, data_dir=str(data_dir), runs_dir=str(runs_dir)))
        found.append(fit(config, lambda event: None))
    return found


def test_compare_shows_only_the_settings_that_differ(two_runs):
    result = compare(two_runs)
    assert result.differ == ("lr",)
    assert result.same["arch"] == "linear" and "lr" not in result.same
    for run in result.runs:
        assert run.status == "finished" and run.epochs_done == 2 and not run.problem
        assert 0 < run.best_test_acc <= 1 and 0 < run.final_test_acc <= 1
        assert run.best_epoch in (1, 2) and run.time_s > 0 and run.images_per_s > 0


def test_compare_sorts_by_any_column(two_runs):
    by_lr = compare(two_runs, sort_by="lr")
    assert [run.settings["lr"] for run in by_lr.runs] == [0.003, 0.01]
    by_test = compare(two_runs, sort_by="best-test")
    assert by_test.runs[0].best_test_acc >= by_test.runs[1].best_test_acc
    with pytest.raises(WorkbenchError, match="cannot sort by 'nonsense'"):
        compare(two_runs, sort_by="nonsense")


def test_compare_json_from_the_cli(two_runs):
    result = run_here("compare", *two_runs, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["differ"] == ["lr"]
    assert [run["path"] for run in data["runs"]] == [str(path) for path in two_runs]
    assert {run["settings"]["lr"] for run in data["runs"]} == {0.01, 0.003}
    table = run_here("compare", *two_runs)
    assert table.returncode == 0 and "same for all" in table.stdout and "best test" in table.stdout


def test_compare_works_without_the_data_and_marks_damaged_runs(two_runs, tmp_path):
    gone, torn, missing = (tmp_path / name for name in ("gone", "torn", "missing"))
    for copy in (gone, torn, missing):
        shutil.copytree(two_runs[0], copy)
    config = (gone / "config.toml").read_text()
    (gone / "config.toml").write_text(config.replace('dataset = "shapes"', f'dataset = "{tmp_path}/no-such-folder"'))
    with open(torn / "metrics.jsonl", "a") as handle:
        handle.write('{"type": "epoch", "epo')  # a crash mid-write
    (missing / "metrics.jsonl").unlink()
    result = compare([two_runs[1], gone, torn, missing])
    by_name = {run.name: run for run in result.runs}
    assert by_name["gone"].best_test_acc is not None and not by_name["gone"].problem
    assert "dataset" in result.differ
    assert by_name["torn"].problem.startswith("metrics.jsonl torn (1 unreadable line")
    assert by_name["torn"].best_test_acc == read_figures(two_runs[0]).best_test_acc  # the whole rows still count
    assert by_name["missing"].problem == "metrics.jsonl missing" and by_name["missing"].best_test_acc is None
    assert by_name[two_runs[1].name].best_test_acc is not None  # the others are shown
    shown = run_here("compare", two_runs[1], torn, missing)
    assert shown.returncode == 0 and "metrics.jsonl torn" in shown.stdout and "metrics.jsonl missing" in shown.stdout


def test_a_sweep_of_runs_adds_the_value_table(two_runs):
    queue = JobQueue(two_runs[0].parent)
    ids = queue.add([["--lr", "0.01"], ["--lr", "0.003"]], sweep="sweep-test")
    for job_id, run_dir in zip(ids, two_runs):
        queue.set_run_dir(job_id, run_dir)
    result = compare(two_runs)
    assert result.sweep == "sweep-test"
    assert set(result.by_value["lr"]) == {"0.01", "0.003"}
    by_sweep = run_here("compare", "--sweep", "sweep-test", "--runs-dir", two_runs[0].parent, "--json")
    assert json.loads(by_sweep.stdout)["sweep"] == "sweep-test"
    (two_runs[0].parent / "queue.sqlite").unlink()


# ---- sweep -----------------------------------------------------------------------------------


def test_sweep_expands_the_grid_in_order():
    sweep = expand({"arch": "linear,basic_cnn", "lr": "0.1,0.01", "epochs": "3"}, RunConfig(), [])
    assert sweep.swept == ("arch", "lr")
    assert [point.values for point in sweep.points] == [
        {"arch": a, "lr": lr, "epochs": "3"} for a in ("linear", "basic_cnn") for lr in ("0.1", "0.01")]
    assert sweep.points[1].args == ("--arch", "linear", "--lr", "0.01", "--epochs", "3")
    assert sweep.points[3].config.arch == "basic_cnn" and sweep.points[3].config.lr == 0.01


def test_sweep_random_picks_are_seeded_and_distinct():
    grid = {"lr": "0.1,0.03,0.01,0.003", "batch_size": "32,64,128"}
    first = expand(grid, RunConfig(), [], random_picks=5, seed=7)
    again = expand(grid, RunConfig(), [], random_picks=5, seed=7)
    other = expand(grid, RunConfig(), [], random_picks=5, seed=8)
    assert [p.values for p in first.points] == [p.values for p in again.points]
    assert len({tuple(p.values.items()) for p in first.points}) == 5
    assert [p.values for p in first.points] != [p.values for p in other.points]
    with pytest.raises(WorkbenchError, match="more points than the grid's 12"):
        expand(grid, RunConfig(), [], random_picks=13)


def test_augment_alternatives_split_on_slash():
    sweep = expand({"augment": "crop,flip/none"}, RunConfig(), [])
    assert [p.config.augment for p in sweep.points] == [("crop", "flip"), ()]


@pytest.mark.parametrize("given, named", [
    ({"lr": "0.1,-1"}, "'-1' of --lr"),
    ({"arch": "linear,nope"}, "'nope' of --arch"),
    ({"batch_size": "32,big"}, "'big' of --batch-size"),
])
def test_sweep_refuses_a_bad_value_by_name(given, named):
    with pytest.raises(WorkbenchError, match=named):
        expand(given, RunConfig(), [])


@pytest.mark.parametrize("argv, said", [
    (["sweep", "--arch", "basic_cnn", "--recipe", "standard,speedrun"], "the point --recipe speedrun is refused"),
    (["queue", "add", "--arch", "basic_cnn", "--recipe", "speedrun"], "tuned for the speedrun network"),
    (["sweep", "--arch", "linear", "--seed", "1,2", "--sweep-random", "0"], "--sweep-random takes a number"),
    (["sweep", "--arch", "speedrun", "--recipe", "speedrun", "--clip-grad-norm", "0,1,2"],
     "--clip-grad-norm is not read by the speedrun recipe"),
    pytest.param(["queue", "add", "--arch", "linear", "--device", "cuda"], "no CUDA GPU is visible",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")),
    (["sweep", "--arch", "linear", "--device", "cpu", "--precision", "fp16,bf16"], "fp16 needs a GPU"),
])
def test_what_train_would_refuse_is_refused_before_it_is_queued(tmp_path, capsys, argv, said):
    from tests.support.cli import one_line_error

    assert said in one_line_error(capsys, [*argv, "--dataset", "shapes", "--runs-dir", str(tmp_path / "runs")])
    assert not (tmp_path / "runs").exists()


def test_compare_counts_no_difference_in_a_setting_a_runs_recipe_does_not_read(tmp_path):
    from workbench.core.experiments.compare import format_setting

    for name, values in (("standard", {}), ("speedrun-a", dict(recipe="speedrun", arch="speedrun", lr=0.5,
                                                                    clip_grad_norm=5.0)),
                         ("speedrun-b", dict(recipe="speedrun", arch="speedrun", lr=0.1))):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.toml").write_text(RunConfig.from_mapping(values).to_toml())
    both = compare([tmp_path / "speedrun-a", tmp_path / "speedrun-b"])
    assert "lr" not in both.differ and "clip_grad_norm" not in both.differ  # the speedrun sets its own
    mixed = compare([tmp_path / "standard", tmp_path / "speedrun-a"])
    assert "clip_grad_norm" in mixed.differ  # one run reads it
    assert [format_setting(run.settings["clip_grad_norm"]) for run in mixed.runs] == ["0", "-"]


def test_sweep_cli_refuses_before_anything_is_queued(tmp_path):
    runs_dir = tmp_path / "runs"
    bad = run_here("sweep", "--dataset", "shapes", "--lr", "0.1,0", "--runs-dir", runs_dir)
    assert bad.returncode == 2 and "sweep value '0' of --lr" in bad.stderr and "nothing was queued" in bad.stderr
    small = run_here("sweep", "--arch", "linear,basic_cnn", "--image-size", "12", "--runs-dir", runs_dir)
    assert small.returncode == 2 and "--arch basic_cnn" in small.stderr and "16 px" in small.stderr
    assert not runs_dir.exists()
    good = run_here("sweep", "--arch", "linear,mlp", "--lr", "0.1,0.01", "--epochs", "1", "--runs-dir", runs_dir)
    assert good.returncode == 0, good.stderr
    jobs = JobQueue(runs_dir).jobs()
    # each job keeps its whole config (data set, architecture and epochs always), paths absolute
    assert [job.args for job in jobs] == [("--dataset", "shapes", "--arch", a, "--epochs", "1", "--lr", lr)
                                          for a in ("linear", "mlp") for lr in ("0.1", "0.01")]
    assert len({job.sweep for job in jobs}) == 1 and jobs[0].sweep.startswith("sweep-")


# ---- queue lifecycle: compare --sweep reads each shown run once ------------------------------


def _small_run(runs_dir, index: int, lr: float):
    """A finished run folder as the engine leaves it: config.toml, status, metrics.jsonl."""
    from workbench.core import runs

    run_dir = runs_dir / f"20260101-{index:06d}-linear"
    run_dir.mkdir(parents=True)
    config = RunConfig.from_mapping(dict(dataset="shapes", arch="linear", epochs=2, lr=lr, runs_dir=str(runs_dir)))
    (run_dir / "config.toml").write_text(config.to_toml())
    runs.write_status(run_dir, "finished")
    rows = [{"type": "epoch", "epoch": e, "train_loss": 1.0 / e, "test_acc": 0.3 + e / 10, "elapsed_s": e,
             "images_per_s": 900.0} for e in (1, 2)] + [{"type": "end", "final_test_acc": 0.5, "elapsed_s": 2.0}]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return run_dir.resolve()


def test_queue_lifecycle_compare_sweep_reads_each_shown_run_once(tmp_path, monkeypatch, capsys):
    import os

    from workbench.cli import main
    from workbench.core.experiments import queue as queue_module

    runs_dir = tmp_path / "runs"
    queue = JobQueue(runs_dir)
    folders = {}
    for sweep, lrs in (("sweep-a", (0.1, 0.01, 0.001)), ("sweep-b", (0.2, 0.02, 0.002, 0.0002))):
        ids = queue.add([["--lr", str(lr)] for lr in lrs], sweep=sweep)
        folders[sweep] = [_small_run(runs_dir, job_id, lr) for job_id, lr in zip(ids, lrs)]
        for job_id, folder in zip(ids, folders[sweep]):
            queue.set_run_dir(job_id, folder)
    opened, decoded = [], []
    real_open, real_job = os.open, queue_module._job
    monkeypatch.setattr(os, "open", lambda path, *a, **k: opened.append(str(path)) or real_open(path, *a, **k))
    monkeypatch.setattr(queue_module, "_job", lambda row: decoded.append(row["id"]) or real_job(row))
    assert main(["compare", "--sweep", "sweep-a", "--runs-dir", str(runs_dir), "--json"]) == 0
    monkeypatch.undo()
    result = json.loads(capsys.readouterr().out)
    assert result["sweep"] == "sweep-a" and len(result["runs"]) == 3 and set(result["by_value"]["lr"]) == {"0.1", "0.01", "0.001"}
    assert decoded == [1, 2, 3]  # the sweep's jobs, found by its index; not the 7 of the queue
    for folder in folders["sweep-a"]:
        for name in ("config.toml", "status", "metrics.jsonl"):
            assert opened.count(str(folder / name)) == 1, (name, opened)
    assert not [path for path in opened if any(path.startswith(str(f)) for f in folders["sweep-b"])]


def test_compare_during_a_sweep_says_how_much_has_finished_and_marks_incomplete_means(tmp_path, capsys):
    from workbench.cli import main
    from workbench.core import runs

    runs_dir = tmp_path / "runs"
    queue = JobQueue(runs_dir)
    ids = queue.add([["--lr", lr] for lr in ("0.1", "0.1", "0.01", "0.001")], sweep="sweep-c")
    done_a, running, done_b = (_small_run(runs_dir, job_id, lr) for job_id, lr in zip(ids, (0.1, 0.1, 0.01)))
    runs.write_status(running, "running")  # its best so far (90%) must not move the mean of lr 0.1
    (running / "metrics.jsonl").write_text(json.dumps({"type": "epoch", "epoch": 1, "test_acc": 0.9, "val_acc": 0.8}) + "\n")
    for job_id, folder in zip(ids, (done_a, running, done_b)):
        queue.set_run_dir(job_id, folder)
    runs.write_run_info(done_a, {"image_size": 12})  # trained at 12 px with --image-size 0 (the data's own)
    assert main(["compare", "--sweep", "sweep-c", "--runs-dir", str(runs_dir), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["by_value"]["lr"] == {"0.1": 0.5, "0.01": 0.5}
    assert result["by_value_runs"]["lr"]["0.1"] == {"finished": 1, "runs": 2}
    assert result["sweep_jobs"] == 4 and result["finished"] == 2
    by_name = {run["path"]: run for run in result["runs"]}
    assert by_name[str(done_a)]["settings"]["image_size"] == 12 and by_name[str(done_b)]["settings"]["image_size"] == 0
    assert by_name[str(running)]["best_val_acc"] == 0.8
    assert main(["compare", "--sweep", "sweep-c", "--runs-dir", str(runs_dir)]) == 0
    table = capsys.readouterr().out
    assert "sweep sweep-c: 2 of 4 finished, 1 not started; each mean is over finished runs only" in table
    assert "50.00% *" in table and "1 of 2" in table and "best val" in table
