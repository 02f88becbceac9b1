"""Sweeps in the queue's lifecycle: ids that never collide, points that are distinct once read,
random picks that never build the grid."""

from __future__ import annotations

import itertools
import json
import os
import random
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from tests.support.cli import run_here
from workbench.core.config import RunConfig
from workbench.core.errors import WorkbenchError
from workbench.core.experiments import sweep as sweep_module
from workbench.core.experiments.queue import JobQueue
from workbench.core.experiments.sweep import MAX_POINTS, expand

REPO = Path(__file__).resolve().parent.parent


# ---- ids -------------------------------------------------------------------------------------


def test_queue_lifecycle_sweeps_queued_in_one_second_get_distinct_ids(tmp_path, monkeypatch):
    from workbench.core.experiments import queue as queue_module

    queue = JobQueue(tmp_path / "runs")
    queue.add([["--lr", "0.1"]], sweep="sweep-20261202-064314")  # an id of the old form, to the second
    monkeypatch.setattr(queue_module.time, "strftime", lambda pattern: "sweep-20270101-000000")
    suffixes = iter(["aaaaaa", "aaaaaa", "bbbbbb"])  # the second sweep draws the first one's suffix first
    monkeypatch.setattr(queue_module, "_suffix", lambda: next(suffixes))
    first, first_ids = queue.add_sweep([["--lr", "0.1"], ["--lr", "0.2"]])
    second, second_ids = queue.add_sweep([["--lr", "0.3"]])
    assert (first, second) == ("sweep-20270101-000000-aaaaaa", "sweep-20270101-000000-bbbbbb")
    assert [job.id for job in queue.jobs(sweep=first)] == first_ids == [2, 3]
    assert [job.id for job in queue.jobs(sweep=second)] == second_ids == [4]
    assert [job.id for job in queue.jobs(sweep="sweep-20261202-064314")] == [1]  # old ids still read


def test_queue_lifecycle_two_processes_queueing_sweeps_at_once_never_share_an_id(tmp_path):
    runs_dir = tmp_path / "runs"
    JobQueue(runs_dir).add([])
    code = ("import sys, json\n"
            "from workbench.core.experiments.queue import JobQueue\n"
            "q = JobQueue(sys.argv[1])\n"
            "print(json.dumps([q.add_sweep([['--seed', str(n)]])[0] for n in range(15)]))\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(runs_dir)], stdout=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    ids = [sweep for proc in procs for sweep in json.loads(proc.communicate(timeout=120)[0])]
    assert len(ids) == 30 and len(set(ids)) == 30
    assert all(len(JobQueue(runs_dir).jobs(sweep=sweep)) == 1 for sweep in ids)


# ---- duplicates ------------------------------------------------------------------------------


def test_queue_lifecycle_sweep_points_are_distinct_once_read_first_spelling_kept():
    sweep = expand({"lr": "0.1,0.10,1e-1"}, RunConfig(), [])
    assert [point.values for point in sweep.points] == [{"lr": "0.1"}]
    assert sweep.dropped_points == 2 and sweep.grid_size == 1
    assert sweep.duplicates_line() == "dropped 2 duplicate points: --lr 0.10, 1e-1 (the same as 0.1)"
    crossed = expand({"lr": "1e-1,0.1000", "arch": "linear,mlp,linear"}, RunConfig(), [])
    assert [point.values for point in crossed.points] == [{"lr": "1e-1", "arch": "linear"}, {"lr": "1e-1", "arch": "mlp"}]
    assert crossed.dropped_points == 4 and crossed.swept == ("arch",)
    assert crossed.duplicates_line() == ("dropped 4 duplicate points: --lr 0.1000 (the same as 1e-1); "
                                         "--arch linear (repeated)")
    assert expand({"batch_size": "32,032, 32"}, RunConfig(), []).grid_size == 1
    assert expand({"lr": "0.1,0.2"}, RunConfig(), []).duplicates_line() == ""


def test_queue_lifecycle_sweep_list_settings_are_sets_of_choices():
    """augment applies its ops in its own order: flip,crop is crop,flip; crop,crop is crop."""
    sweep = expand({"augment": "flip,crop/crop,flip/crop,crop/crop/none/NONE"}, RunConfig(), [])
    assert [point.values["augment"] for point in sweep.points] == ["flip,crop", "crop,crop", "none"]
    assert [point.config.augment for point in sweep.points] == [("flip", "crop"), ("crop",), ()]
    assert sweep.duplicates_line() == ("dropped 3 duplicate points: --augment crop,flip (the same as flip,crop); "
                                       "--augment crop (the same as crop,crop); --augment NONE (the same as none)")


def test_queue_lifecycle_sweep_folders_spelled_two_ways_are_one(tmp_path, monkeypatch):
    folder = tmp_path / "pets"
    folder.mkdir()
    monkeypatch.chdir(tmp_path)
    sweep = expand({"dataset": f"pets,./pets,{folder}/,{folder}"}, RunConfig(), [])
    assert [point.values for point in sweep.points] == [{"dataset": "pets"}] and sweep.dropped_points == 3


def test_queue_lifecycle_sweep_cli_says_how_many_duplicates_it_dropped(tmp_path):
    runs_dir = tmp_path / "runs"
    result = run_here("sweep", "--arch", "linear", "--lr", "0.1,0.10,1e-1", "--epochs", "1", "--runs-dir", runs_dir)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()[1:]  # after the line saying what it checks
    assert lines[0] == "dropped 2 duplicate points: --lr 0.10, 1e-1 (the same as 0.1)"
    assert lines[1].startswith("queued 1 job of sweep-")
    [job] = JobQueue(runs_dir).jobs()
    assert job.args[job.args.index("--lr") + 1] == "0.1"


# ---- random picks ------------------------------------------------------------------------------


HUGE = {"lr": "0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,0.95", "momentum": "0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.85",
        "weight_decay": "0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9", "seed": "0,1,2,3,4,5,6,7,8,9",
        "label_smoothing": "0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9", "batch_size": "8,16,24,32,40,48,56,64,72,80",
        "epochs": "1,2,3,4,5,6,7,8,9,10", "clip_grad_norm": "0,1,2,3,4,5,6,7,8,9"}  # 10^8 points


def test_queue_lifecycle_sweep_random_never_builds_the_grid(monkeypatch):
    decoded = []
    real = sweep_module._digits
    monkeypatch.setattr(sweep_module, "_digits", lambda index, sizes: decoded.append(index) or real(index, sizes))
    tracemalloc.start()
    try:
        sweep = expand(HUGE, RunConfig(), [], random_picks=5, seed=3)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert sweep.grid_size == 10**8 and len(decoded) == 5  # five points decoded, not 10^8
    assert peak < 20 * 2**20, peak  # the grid as a list would take gigabytes
    assert len({tuple(point.values.items()) for point in sweep.points}) == 5
    assert [p.values for p in expand(HUGE, RunConfig(), [], random_picks=5, seed=3).points] == [p.values for p in sweep.points]


def test_queue_lifecycle_sweep_random_picks_what_the_old_grid_picked():
    """For a grid without duplicates, a seed picks the same points as when the grid was a list."""
    grid = {"lr": "0.1,0.03,0.01,0.003", "batch_size": "32,64,128", "arch": "linear,mlp"}
    lists = [value.split(",") for value in grid.values()]
    old_grid = list(itertools.product(*lists))
    for seed in range(5):
        old = [old_grid[i] for i in sorted(random.Random(seed).sample(range(len(old_grid)), 7))]
        new = expand(grid, RunConfig(), [], random_picks=7, seed=seed)
        assert [tuple(point.values.values()) for point in new.points] == old


def test_queue_lifecycle_sweep_random_counts_only_distinct_points():
    with pytest.raises(WorkbenchError, match=r"more points than the grid's 2 distinct points \(duplicates dropped\)"):
        expand({"lr": "0.1,0.10,1e-1,0.2"}, RunConfig(), [], random_picks=3)
    assert len(expand({"lr": "0.1,0.10,1e-1,0.2"}, RunConfig(), [], random_picks=2).points) == 2


def test_queue_lifecycle_sweep_bounds_the_jobs_one_sweep_queues():
    with pytest.raises(WorkbenchError, match=r"the grid has 100,000,000 points, more than the 10,000 jobs"):
        expand(HUGE, RunConfig(), [])
    with pytest.raises(WorkbenchError, match=f"more than the {MAX_POINTS:,} jobs"):
        expand(HUGE, RunConfig(), [], random_picks=MAX_POINTS + 1)
    fractions = ",".join(f"{i / 1000:.3f}" for i in range(1000))  # 0.000 .. 0.999
    whole = ",".join(str(i) for i in range(1000))
    beyond = {"lr": ",".join(f"{(i + 1) / 1000:.3f}" for i in range(1000)), "momentum": fractions,
              "weight_decay": fractions, "label_smoothing": fractions, "seed": whole, "clip_grad_norm": whole,
              "early_stop_delta": whole}  # 1,000^7 points
    picked = expand(beyond, RunConfig(), [], random_picks=3, seed=1)  # past what random.sample can take
    assert picked.grid_size == 10**21 > sys.maxsize and len({tuple(p.values.items()) for p in picked.points}) == 3
