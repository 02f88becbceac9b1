"""Sweeps in the queue's lifecycle: ids that never collide."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from workbench.core.experiments.queue import JobQueue

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
