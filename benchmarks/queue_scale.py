"""The queue and compare at scale: a queue of 100,000 jobs and a sweep of 2,000 small run folders.

    python benchmarks/queue_scale.py make /tmp/qscale     # build both (about a minute)
    time python -m workbench queue --runs-dir /tmp/qscale/big > /dev/null
    time python -m workbench compare --sweep sweep-scale --runs-dir /tmp/qscale/sweep > /dev/null

The jobs are made through the queue's own API (each with a whole config's flags, as `sweep` and
`queue add` store them); the run folders are written the way the engine writes them: config.toml,
status, run.json and a metrics.jsonl of 10 epoch rows and an end row.
"""

from __future__ import annotations

import json
import random
import sqlite3
import sys
from pathlib import Path

from workbench.core import runs
from workbench.core.config import RunConfig
from workbench.core.experiments.queue import JobQueue, args_for_config

JOBS, RUNS, EPOCHS = 100_000, 2_000, 10


def make_queue(runs_dir: Path, jobs: int = JOBS) -> None:
    queue = JobQueue(runs_dir)
    base = RunConfig.from_mapping(dict(dataset="shapes", arch="basic_cnn", epochs=4, runs_dir=str(runs_dir)))
    flags = [args_for_config(base.replace(lr=0.001 + i * 1e-7, seed=i)) for i in range(jobs)]
    queue.add(flags, sweep="sweep-big")
    states = random.Random(0).choices(["done", "failed", "stopped", "pending"], [90, 3, 2, 5], k=jobs)
    with sqlite3.connect(queue.path) as db:  # most jobs ended long ago; the newest wait
        db.executemany("UPDATE jobs SET state = ?, ended = added, run_dir = ? WHERE id = ?",
                       [(state, str(runs_dir / f"run-{i}") if state != "pending" else "", i + 1)
                        for i, state in enumerate(states)])


def fake_run(runs_dir: Path, index: int) -> Path:
    run_dir = runs_dir / f"20260101-{index:06d}-basic_cnn"
    run_dir.mkdir(parents=True)
    config = RunConfig.from_mapping(dict(dataset="shapes", arch="basic_cnn", epochs=EPOCHS, lr=0.001 * (1 + index % 7),
                                         batch_size=(32, 64, 128)[index % 3], runs_dir=str(runs_dir)))
    (run_dir / "config.toml").write_text(config.to_toml())
    runs.write_status(run_dir, "finished")
    runs.write_run_info(run_dir, {"run_id": f"job-{index + 1}", "arch": "basic_cnn", "dataset": "shapes"})
    rows = [{"type": "start", "epochs": EPOCHS}]
    for epoch in range(1, EPOCHS + 1):
        rows.append({"type": "epoch", "epoch": epoch, "train_loss": 1.0 / epoch, "train_acc": 0.5 + epoch / 40,
                     "val_loss": 1.1 / epoch, "val_acc": 0.45 + epoch / 40, "test_acc": 0.44 + epoch / 40,
                     "elapsed_s": 3.0 * epoch, "images_per_s": 5000.0})
    rows.append({"type": "end", "best_test_acc": 0.69, "final_test_acc": 0.68, "elapsed_s": 30.0})
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return run_dir


def make_sweep(runs_dir: Path, count: int = RUNS) -> None:
    folders = [fake_run(runs_dir, i) for i in range(count)]
    queue = JobQueue(runs_dir)
    ids = queue.add([["--lr", str(0.001 * (1 + i % 7))] for i in range(count)], sweep="sweep-scale")
    with sqlite3.connect(queue.path) as db:
        db.executemany("UPDATE jobs SET state = 'done', run_dir = ? WHERE id = ?",
                       [(str(folder.resolve()), job_id) for folder, job_id in zip(folders, ids)])


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "make":
        sys.exit(__doc__)
    root = Path(sys.argv[2])
    if root.exists():
        sys.exit(f"{root} exists; give a new folder")
    make_queue(root / "big")
    make_sweep(root / "sweep")
    print(f"made {root / 'big'} ({JOBS:,} jobs) and {root / 'sweep'} ({RUNS:,} runs of sweep-scale)")
