"""The job queue: order, atomic claims by two runners, parallel jobs, crash of a job and its resume."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.cli import run_here, workbench
from workbench.cli import main
from workbench.core import exit_codes, runs
from workbench.core.config import RunConfig
from workbench.core.experiments.queue import JobQueue, args_for_config, runner_id

REPO = Path(__file__).resolve().parent.parent


def tiny_job(data_dir, epochs=1, **extra) -> list[str]:
    flags = ["--dataset", "shapes", "--arch", "linear", "--epochs", str(epochs), "--image-size", "12",
             "--device", "cpu", "--data-dir", str(data_dir)]
    for key, value in extra.items():
        flags += ["--" + key.replace("_", "-"), str(value)]
    return flags


def test_jobs_are_claimed_oldest_first_and_only_once(tmp_path):
    queue = JobQueue(tmp_path / "runs")
    ids = queue.add([["--lr", "0.1"], ["--lr", "0.2"], ["--lr", "0.3"]], sweep="s1")
    assert ids == [1, 2, 3] and [job.state for job in queue.jobs()] == ["pending"] * 3
    first, second = queue.claim("me:1"), queue.claim("me:1")
    assert (first.id, second.id) == (1, 2) and first.state == "running" and first.attempts == 1
    queue.finish(1, "done", 0)
    assert queue.claim("me:1").id == 3 and queue.claim("me:1") is None
    assert [job.state for job in queue.jobs()] == ["done", "running", "running"]


def test_two_processes_claiming_never_take_the_same_job(tmp_path):
    queue = JobQueue(tmp_path / "runs")
    queue.add([["--seed", str(i)] for i in range(60)])
    claimer = (
        "import sys, json\n"
        "from workbench.core.experiments.queue import JobQueue\n"
        "q = JobQueue(sys.argv[1]); got = []\n"
        "while (job := q.claim(sys.argv[2])) is not None: got.append(job.id)\n"
        "print(json.dumps(got))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", claimer, str(queue.runs_dir), f"host:{n}"],
                              stdout=subprocess.PIPE, text=True, env=env) for n in range(2)]
    taken = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    assert sorted(taken[0] + taken[1]) == list(range(1, 61))
    assert not set(taken[0]) & set(taken[1])
    assert all(job.attempts == 1 for job in queue.jobs())


def test_a_dead_runners_job_goes_back_to_the_queue(tmp_path):
    queue = JobQueue(tmp_path / "runs")
    queue.add([["--lr", "0.1"], ["--lr", "0.2"]])
    queue.claim(f"{socket.gethostname()}:999999999")  # an older runner (no lock file) whose pid is not alive
    queue.claim(runner_id())  # this process: alive
    changed = queue.recover()
    assert [job.id for job in changed] == [1]
    assert [job.state for job in queue.jobs()] == ["pending", "running"]


def test_args_for_config_rebuild_the_config(tmp_path):
    config = RunConfig.from_mapping(dict(arch="linear", lr=0.02, augment="none", compile=True, runs_dir=str(tmp_path)))
    args = args_for_config(config)
    assert "--runs-dir" not in args and args[args.index("--augment") + 1] == "none" and "--compile" in args
    from workbench.cli import build_command_parser
    from workbench.options import config_from_args

    rebuilt = config_from_args(build_command_parser("train").parse_args(args))
    assert rebuilt.replace(runs_dir=str(tmp_path)) == config


def test_queue_run_parallel_2_runs_two_tiny_jobs_side_by_side(tmp_path, data_dir):
    runs_dir = tmp_path / "runs"
    for lr in ("0.01", "0.003"):
        added = run_here("queue", "add", *tiny_job(data_dir, epochs=2, lr=lr), "--runs-dir", runs_dir)
        assert added.returncode == 0, added.stderr
    listed = run_here("queue", "--runs-dir", runs_dir)
    assert "2 pending" in listed.stdout
    result = workbench("queue", "run", "--parallel", "2", "--gpus", "0,1", "--runs-dir", runs_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = JobQueue(runs_dir).jobs()
    assert [job.state for job in jobs] == ["done", "done"], [job.reason for job in jobs]
    assert sorted(job.gpu for job in jobs) == ["0", "1"]  # one CUDA_VISIBLE_DEVICES per slot
    assert jobs[1].started < jobs[0].ended and jobs[0].started < jobs[1].ended  # they overlapped
    run_dirs = {Path(job.run_dir) for job in jobs}
    assert len(run_dirs) == 2 and all(runs.read_status(d)[0] == "finished" for d in run_dirs)
    assert {runs.read_config(d).lr for d in run_dirs} == {0.01, 0.003}
    as_json = json.loads(run_here("queue", "list", "--json", "--runs-dir", runs_dir).stdout)
    assert [job["state"] for job in as_json] == ["done", "done"]


def test_two_queue_runners_share_the_work(tmp_path, data_dir):
    runs_dir = tmp_path / "runs"
    JobQueue(runs_dir).add([tiny_job(data_dir, seed=seed) for seed in range(2)])
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "workbench", "queue", "run", "--runs-dir", str(runs_dir)]
    runners = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
               for _ in range(2)]
    outputs = [runner.communicate(timeout=300)[0] for runner in runners]
    jobs = JobQueue(runs_dir).jobs()
    assert [job.state for job in jobs] == ["done"] * 2, outputs
    assert all(job.attempts == 1 for job in jobs)  # nobody trained a job twice
    assert len({job.run_dir for job in jobs}) == 2 and len(list(runs_dir.glob("2*"))) == 2


def test_a_queue_runner_supervises_without_loading_torch(tmp_path):
    """A runner waits on training processes for hours: it must not hold torch (seconds to import,
    hundreds of MB) when only its jobs train. (`--parallel 2` without --gpus or CUDA_VISIBLE_DEVICES
    still asks torch how many GPUs there are.)"""
    code = ("import sys\nfrom workbench.cli import main\n"
            "code = main(['queue', 'run', '--runs-dir', sys.argv[1]])\n"
            "print(code, sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))[:3])\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    JobQueue(tmp_path / "runs").add([["--seed", "1"]])
    JobQueue(tmp_path / "runs").remove(1)  # a queue with nothing to run: the runner starts, looks, ends
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "runs")], capture_output=True, text=True,
                          env=env, timeout=60)
    assert done.stdout.splitlines()[-1:] == ["0 []"], done.stdout + done.stderr


def test_a_killed_job_resumes_from_its_checkpoint(tmp_path, data_dir):
    runs_dir = tmp_path / "runs"
    queue = JobQueue(runs_dir)
    queue.add([tiny_job(data_dir, epochs=4, batch_size=32)])
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "workbench", "queue", "run", "--runs-dir", str(runs_dir)]
    runner = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                              start_new_session=True)
    deadline = time.time() + 120
    run_dir = None
    while time.time() < deadline:  # wait for the first epoch's checkpoint
        job = queue.get(1)
        run_dir = Path(job.run_dir) if job and job.run_dir else None
        if run_dir is not None and runs.epoch_records(runs.read_metrics(run_dir)) and (run_dir / "checkpoints" / "last.pt").is_file():
            break
        time.sleep(0.05)
    # Pause it through its control file (so it cannot finish first), then kill the runner and its
    # trainer at once, as a power cut would.
    (run_dir / "control").write_text("pause\n")
    time.sleep(0.6)
    os.killpg(runner.pid, signal.SIGKILL)
    runner.wait()
    assert run_dir is not None
    done_before = len(runs.epoch_records(runs.read_metrics(run_dir)))
    assert done_before < 4, "the job finished before it could be killed; make it longer"
    assert queue.get(1).state == "running"  # nobody has noticed yet
    deadline = time.time() + 10
    while runs.is_locked(run_dir) and time.time() < deadline:
        time.sleep(0.05)
    again = run_here("queue", "run", "--runs-dir", runs_dir)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "its runner is gone" in again.stdout and f"resuming {run_dir.name}" in again.stdout
    job = queue.get(1)
    assert job.state == "done" and job.attempts == 2 and Path(job.run_dir) == run_dir
    assert runs.read_status(run_dir)[0] == "finished"
    assert [row["epoch"] for row in runs.epoch_records(runs.read_metrics(run_dir))] == [1, 2, 3, 4]
    assert len(list(runs_dir.glob("2*"))) == 1  # resumed in its own folder, not started again
    assert "resuming from" in queue.log_path(1).read_text()


# ---- queue lifecycle: ownership by lock, a trainer found by its run id, a trainer that ignores SIGTERM ----


def test_queue_lifecycle_a_dead_runner_is_told_by_its_lock_not_by_a_reused_pid(tmp_path):
    from workbench.core.experiments.queue import RunnerLock

    queue = JobQueue(tmp_path / "runs")
    queue.add([["--seed", "1"], ["--seed", "2"]])
    reused = f"{socket.gethostname()}:{os.getpid()}:deadbeef"  # this pid lives: it was reused by us
    living = runner_id()
    RunnerLock(queue.log_dir, reused).path.parent.mkdir(parents=True, exist_ok=True)
    RunnerLock(queue.log_dir, reused).path.write_text("")  # its lock file, held by nobody: that runner died
    held = RunnerLock(queue.log_dir, living)
    held.acquire()
    try:
        queue.claim(reused)
        queue.claim(living)
        recovered = [job.id for job in queue.recover()]
        assert recovered == [1] and [job.state for job in queue.jobs()] == ["pending", "running"]
    finally:
        held.release()


def test_queue_lifecycle_a_job_whose_runner_died_early_is_found_by_its_run_id(tmp_path):
    from workbench.core.experiments.queue import RunnerLock

    queue = JobQueue(tmp_path / "runs")
    queue.add([["--seed", "1"]])
    dead = f"{socket.gethostname()}:1:cafe"
    RunnerLock(queue.log_dir, dead).path.parent.mkdir(parents=True, exist_ok=True)
    RunnerLock(queue.log_dir, dead).path.write_text("")
    queue.claim(dead)
    run_dir = tmp_path / "runs" / "20260101-000000-linear"  # the trainer made it; the runner never learnt it
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.pt").write_bytes(b"x")
    runs.write_run_info(run_dir, {"run_id": "job-1"})
    runs.write_status(run_dir, "stopped", "SIGTERM")
    queue.recover()
    (job,) = queue.jobs()
    assert job.state == "pending" and Path(job.run_dir) == run_dir and job.resumable  # resumed, not started again


def test_queue_lifecycle_a_trainer_that_ignores_sigterm_is_killed_and_marked(tmp_path):
    import threading

    from workbench.core.experiments.runner import QueueRunner

    class Stubborn:
        def __init__(self):
            code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(120)"
            self.process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
            self.process.stdout.readline()  # SIGTERM is ignored from here on

        def run_dir(self):
            return None

        def failure(self):
            return "stubborn"

    queue = JobQueue(tmp_path / "runs")
    queue.add([["--seed", "1"]])
    runner = QueueRunner(queue, start_job=lambda job, gpu: Stubborn(), kill_after_s=1.0)
    worker = threading.Thread(target=runner.run)
    worker.start()
    deadline = time.monotonic() + 30
    while queue.jobs()[0].state != "running" and time.monotonic() < deadline:
        time.sleep(0.1)
    runner.stop()
    worker.join(timeout=30)
    assert not worker.is_alive()
    (job,) = queue.jobs()
    assert job.state == "stopped" and "SIGTERM" in job.reason and "killed" in job.reason


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signalled_queue_run_ends_with_that_signals_code_and_puts_the_job_back(tmp_path, monkeypatch, signum):
    import threading

    from workbench import queue_commands

    class Sleeper:  # a trainer stand-in that stops on SIGTERM, as a trainer does after its step
        def __init__(self):
            self.process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])

        def run_dir(self):
            return None

        def failure(self):
            return None

    queue = JobQueue(tmp_path / "runs")
    queue.add([["--seed", "1"]])
    monkeypatch.setattr(queue_commands, "start_job", lambda queue, job, gpu: Sleeper())

    def signal_once_running():
        deadline = time.monotonic() + 30
        while queue.jobs()[0].state != "running" and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signum)  # to this process, whose main thread runs the queue

    threading.Thread(target=signal_once_running, daemon=True).start()
    code = main(["queue", "run", "--runs-dir", str(tmp_path / "runs")])
    assert code == (exit_codes.TERMINATED if signum == signal.SIGTERM else exit_codes.STOPPED)
    assert queue.jobs()[0].state != "running"


def test_queue_bounds_parallel_jobs_in_one_line(tmp_path, capsys):
    from tests.support.cli import one_line_error

    missing = tmp_path / "mistyped"
    assert "no queue in" in one_line_error(capsys, ["queue", "run", "--runs-dir", str(missing)])
    assert not missing.exists()  # refused before anything was written
    JobQueue(tmp_path / "runs").add([["--seed", "1"]])
    error = one_line_error(capsys, ["queue", "run", "--parallel", "100000", "--runs-dir", str(tmp_path / "runs")])
    assert "--parallel" in error and "per CPU core" in error
    assert not (tmp_path / "runs" / ".queue").exists()  # no runner's lock or log was written


# ---- queue lifecycle: a listing reads what it shows ----------------------------------------


def _queue_of(tmp_path, count: int) -> JobQueue:
    """`count` jobs: the first 90% ended (newest last), two running, the rest pending."""
    import sqlite3

    queue = JobQueue(tmp_path / "runs")
    queue.add([["--seed", str(i)] for i in range(count)])
    ended = int(count * 0.9)
    with sqlite3.connect(queue.path) as db:
        db.executemany("UPDATE jobs SET state = ?, ended = ? WHERE id = ?",
                       [(("done", "failed", "stopped")[i % 3], 1000.0 + i, i) for i in range(1, ended + 1)])
        db.execute("UPDATE jobs SET state = 'running' WHERE id IN (?, ?)", (ended + 1, ended + 2))
    return queue


def test_queue_lifecycle_listing_decodes_only_the_rows_it_shows(tmp_path, monkeypatch):
    from workbench.core.experiments import queue as queue_module

    queue = _queue_of(tmp_path, 3_000)
    decoded = []
    real = queue_module._job
    monkeypatch.setattr(queue_module, "_job", lambda row: decoded.append(row["id"]) or real(row))
    jobs, counts = queue.listing(10)
    assert counts == {"pending": 298, "running": 2, "done": 900, "failed": 900, "stopped": 900}
    assert [job.id for job in jobs] == [*range(2691, 2701), 2701, 2702, *range(2703, 2713)]
    assert len(decoded) == len(jobs) == 22  # the rows shown, not the 3,000
    decoded.clear()
    assert queue.has_pending() and queue.get(5).id == 5 and len(decoded) == 1


def test_queue_lifecycle_listing_finds_its_rows_by_index_never_a_full_scan(tmp_path, monkeypatch):
    import re
    import sqlite3

    queue = _queue_of(tmp_path, 500)
    statements: list[str] = []
    real_connect = sqlite3.connect

    def traced(*args, **kwargs):
        db = real_connect(*args, **kwargs)
        db.set_trace_callback(statements.append)
        return db

    monkeypatch.setattr(sqlite3, "connect", traced)
    queue.listing(10)
    queue.jobs(sweep="s")
    queue.sweeps_of([tmp_path / "a", tmp_path / "b"])
    monkeypatch.undo()
    selects = [sql for sql in statements if sql.lstrip().upper().startswith("SELECT") and "sqlite_master" not in sql]
    assert len(selects) == 6
    with sqlite3.connect(queue.path) as db:
        for sql in selects:
            plan = [row[-1] for row in db.execute("EXPLAIN QUERY PLAN " + sql)]
            assert not any(re.fullmatch(r"SCAN (TABLE )?jobs", step) or "TEMP B-TREE" in step for step in plan), (sql, plan)


def test_queue_lifecycle_the_cli_shows_a_window_with_counts_and_more_on_request(tmp_path, capsys):
    from tests.support.cli import one_line_error
    from workbench.cli import main

    queue = _queue_of(tmp_path, 300)
    assert main(["queue", "--runs-dir", str(queue.runs_dir)]) == 0
    out = capsys.readouterr().out
    assert "28 pending · 2 running · 90 done · 90 failed · 90 stopped" in out
    assert "showing 42 of 300 jobs: the running ones, the next 20 pending and the last 20 ended; " \
           "--limit N shows more, --all every job" in out
    assert main(["queue", "list", "--limit", "3", "--json", "--runs-dir", str(queue.runs_dir)]) == 0
    assert [job["id"] for job in json.loads(capsys.readouterr().out)] == [268, 269, 270, 271, 272, 273, 274, 275]
    assert main(["queue", "--all", "--json", "--runs-dir", str(queue.runs_dir)]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 300
    assert "--limit takes 1 to 1,000,000" in one_line_error(capsys, ["queue", "--limit", "0", "--runs-dir", str(queue.runs_dir)])


# ---- messages: each sqlite error on the queue says what it is -------------------------------


def _one_line_queue_error(capsys, argv, kind_words: str) -> str:
    from tests.support.cli import one_line_error

    error = one_line_error(capsys, argv)
    assert kind_words in error, error
    return error


def test_messages_a_busy_queue_says_try_again_not_move_it_aside(tmp_path, monkeypatch, capsys):
    import sqlite3

    from workbench.core.experiments import queue_file

    queue = JobQueue(tmp_path / "runs")
    queue.add([["--seed", "1"]])
    holder = sqlite3.connect(queue.path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another workbench writing, past the timeout
    monkeypatch.setattr(queue_file, "BUSY_TIMEOUT_S", 0.2)
    try:
        for argv in (["queue", "--runs-dir", str(queue.runs_dir)],
                     ["queue", "add", "--arch", "linear", "--runs-dir", str(queue.runs_dir)]):
            error = _one_line_queue_error(capsys, argv, "is busy: another workbench process has held its write lock")
            assert "try again" in error and "move it aside" not in error
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert [job.args for job in queue.jobs()] == [("--seed", "1")]  # nothing was added, nothing lost


def test_messages_a_read_only_queue_says_read_only(tmp_path, monkeypatch, capsys):
    import sqlite3

    from workbench.core.experiments import queue_file

    queue = JobQueue(tmp_path / "runs")
    queue.add([["--seed", "1"]])
    real_connect = sqlite3.connect

    def read_only(path, *args, **kwargs):  # what a read-only mount or file gives sqlite, for root too
        return real_connect(f"file:{path}?mode=ro", *args, uri=True, **kwargs)

    monkeypatch.setattr(queue_file.sqlite3, "connect", read_only)
    error = _one_line_queue_error(capsys, ["queue", "add", "--arch", "linear", "--runs-dir", str(queue.runs_dir)],
                                  "it is read-only (the permissions of the file or its folder")
    assert "move it aside" not in error
    assert main_ok(["queue", "--runs-dir", str(queue.runs_dir)], capsys)  # reading it still works
    monkeypatch.undo()
    if os.geteuid() != 0:  # real permissions (root writes through them)
        queue.path.chmod(0o444)
        queue.runs_dir.chmod(0o555)
        try:
            _one_line_queue_error(capsys, ["queue", "add", "--arch", "linear", "--runs-dir", str(queue.runs_dir)],
                                  "read-only")
        finally:
            queue.runs_dir.chmod(0o755)
            queue.path.chmod(0o644)
    assert len(queue.jobs()) == 1


def main_ok(argv, capsys) -> bool:
    from workbench.cli import main

    code = main(argv)
    capsys.readouterr()
    return code == 0


def test_messages_a_full_disk_says_free_space_and_keeps_the_queue(tmp_path, monkeypatch, capsys):
    import sqlite3

    from workbench.core.experiments import queue_file

    queue = JobQueue(tmp_path / "runs")
    queue.add([["--seed", "1"]])
    real_connect = sqlite3.connect

    def no_room(*args, **kwargs):  # sqlite's own SQLITE_FULL: the file may not grow by a page
        db = real_connect(*args, **kwargs)
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        db.execute(f"PRAGMA max_page_count = {pages}")
        return db

    monkeypatch.setattr(queue_file.sqlite3, "connect", no_room)
    with pytest.raises(queue_file.QueueUnusable) as refused:
        queue.add([["--seed", str(i), "--note", "x" * 2000] for i in range(50)])
    assert refused.value.kind == "full" and "the disk is full; free some space" in str(refused.value)
    assert "move it aside" not in str(refused.value)
    monkeypatch.undo()
    assert [job.args for job in queue.jobs()] == [("--seed", "1")]  # all or nothing, the queue kept


def test_messages_damaged_and_foreign_files_alone_are_told_to_move_aside(tmp_path, capsys):
    import shutil
    import sqlite3

    runs_dir = tmp_path / "runs"
    JobQueue(runs_dir).add([["--seed", str(i), "--pad", "x" * 300] for i in range(400)])
    path = runs_dir / "queue.sqlite"
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size // 3)  # a copy cut short
    error = _one_line_queue_error(capsys, ["queue", "--runs-dir", str(runs_dir)], "is damaged")
    assert "move it aside to start a new one" in error
    path.write_bytes(b"not sqlite at all\n" * 200)
    assert "move it aside" in _one_line_queue_error(capsys, ["queue", "--runs-dir", str(runs_dir)], "is damaged")
    path.unlink()
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE jobs (x)")  # another program's table of that name
    assert "move it aside" in _one_line_queue_error(capsys, ["queue", "--runs-dir", str(runs_dir)],
                                                    "is not a workbench queue")
    shutil.rmtree(runs_dir)


def test_messages_what_is_not_a_file_is_refused_before_sqlite_opens_it(tmp_path, capsys):
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    path = runs_dir / "queue.sqlite"
    os.mkfifo(path)  # sqlite would say "disk I/O error", or block
    for argv in (["queue", "--runs-dir", str(runs_dir)], ["sweep", "--lr", "0.1,0.2", "--runs-dir", str(runs_dir)],
                 ["queue", "add", "--arch", "linear", "--runs-dir", str(runs_dir)]):
        error = _one_line_queue_error(capsys, argv, "is not a regular file (a named pipe)")
        assert "disk I/O" not in error
    path.unlink()
    path.symlink_to("/dev/zero")
    _one_line_queue_error(capsys, ["queue", "--runs-dir", str(runs_dir)], "is not a regular file (a character device)")
    path.unlink()
    path.mkdir()
    _one_line_queue_error(capsys, ["queue", "--runs-dir", str(runs_dir)], "is not a regular file (a folder)")
    path.rmdir()
    path.symlink_to(tmp_path / "gone" / "queue.sqlite")
    _one_line_queue_error(capsys, ["queue", "add", "--arch", "linear", "--runs-dir", str(runs_dir)], "which is not there")
    assert not (tmp_path / "gone").exists()
    path.unlink()
    path.write_bytes(b"")  # an empty file is sqlite's empty database: no jobs yet, and room for some
    assert JobQueue(runs_dir).jobs() == []
    _one_line_queue_error(capsys, ["queue", "remove", "3", "--runs-dir", str(runs_dir)], "there is no job 3")
    assert path.stat().st_size == 0  # refused: nothing written
    assert JobQueue(runs_dir).add([["--seed", "1"]]) == [1]
    journal = runs_dir / "queue.sqlite-journal"
    os.mkfifo(journal)  # sqlite opens a journal it finds beside the file: a pipe there hung it
    listed = workbench("queue", "--runs-dir", runs_dir, timeout=60)
    assert listed.returncode == 2 and "queue.sqlite-journal is not a regular file (a named pipe)" in listed.stderr


def _dead_runner(queue) -> str:
    """A runner id whose lock file no process holds: a runner killed outright."""
    from workbench.core.experiments.queue import RunnerLock

    dead = f"{socket.gethostname()}:1:0dead0"
    RunnerLock(queue.log_dir, dead).path.parent.mkdir(parents=True, exist_ok=True)
    RunnerLock(queue.log_dir, dead).path.write_text("")
    return dead


def test_hangs_pipes_and_files_in_the_queue_folder_stop_queue_run_in_one_line(tmp_path, data_dir):
    runs_dir = tmp_path / "runs"
    queue = JobQueue(runs_dir)
    queue.add([tiny_job(data_dir)])
    log_folder = runs_dir / ".queue"
    log_folder.mkdir()
    for name in ("job-1.log", "job-1.jsonl"):  # a pipe nobody reads: opening it to write blocked for ever
        os.mkfifo(log_folder / name)
        done = run_here("queue", "run", "--runs-dir", runs_dir, within=60)
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip().splitlines()[-1].endswith(f"{name} is not a regular file (a named pipe); "
                                                             "it was put there by hand, remove it")
        assert "Traceback" not in done.stderr and [job.state for job in queue.jobs()] == ["pending"]
        (log_folder / name).unlink()
    for blocked in (log_folder / "runners", log_folder):  # a file where the runner keeps its lock folder
        shutil.rmtree(blocked, ignore_errors=True)  # the folder an earlier run made
        blocked.parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(blocked)
        done = run_here("queue", "run", "--runs-dir", runs_dir, within=60)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert f"{blocked} should be a folder but is a named pipe" in done.stderr
        blocked.unlink()
    assert [job.state for job in queue.jobs()] == ["pending"]


def _damage_rows(queue) -> None:
    import sqlite3

    db = sqlite3.connect(queue.path)
    for args in ("not json", "[1, 2, null]", '{"a": 1}', '["--bogus", "1"]'):
        db.execute("INSERT INTO jobs (args, sweep, state, run_dir, runner, gpu, attempts, reason, added) "
                   "VALUES (?, '', 'pending', '', '', '', 0, '', 0)", (args,))
    db.execute("ALTER TABLE jobs ADD COLUMN written_by_a_newer_workbench TEXT")
    db.commit()
    db.close()


def test_numbers_from_files_queue_rows_no_workbench_wrote_are_listed_and_failed_in_one_line(tmp_path, capsys):
    runs_dir = tmp_path / "runs"
    queue = JobQueue(runs_dir)
    queue.add([["--seed", "1"]])
    queue.remove(1)
    _damage_rows(queue)
    assert main(["queue", "--runs-dir", str(runs_dir)]) == 0
    listed = capsys.readouterr().out
    assert listed.count("damaged: its args are not a list of train flags") == 3 and "4 pending" in listed
    assert main(["queue", "run", "--runs-dir", str(runs_dir)]) == exit_codes.FAILED  # each fails in one line
    out, err = capsys.readouterr()
    assert "usage:" not in out + err and "Traceback" not in err
    assert out.count("failed (its row in the queue is damaged") == 3
    assert "job 5: failed (its flags make no run: unrecognized arguments: --bogus 1)" in out
    assert [job.state for job in queue.jobs()] == ["failed"] * 4


def test_queue_lifecycle_a_killed_runners_job_lists_as_pending_and_can_be_removed(tmp_path, capsys):
    queue = JobQueue(tmp_path / "runs")
    queue.add([["--seed", "1"], ["--seed", "2"]])
    queue.claim(_dead_runner(queue))  # runner and trainer killed with SIGKILL: the row says running
    assert main(["queue", "--runs-dir", str(tmp_path / "runs")]) == 0
    assert "2 pending" in capsys.readouterr().out  # shown as it is, not as the dead runner left it
    queue.claim(_dead_runner(queue))
    assert main(["queue", "remove", "1", "--runs-dir", str(tmp_path / "runs")]) == 0
    assert [job.id for job in queue.jobs()] == [2]


def test_queue_lifecycle_a_job_that_finished_after_its_runner_died_lists_among_the_ended(tmp_path):
    queue = JobQueue(tmp_path / "runs")
    queue.add([["--seed", str(seed)] for seed in range(3)])
    queue.claim(_dead_runner(queue))
    run_dir = tmp_path / "runs" / "20260101-000000-linear"
    run_dir.mkdir(parents=True)
    runs.write_run_info(run_dir, {"run_id": "job-1"})
    runs.write_status(run_dir, "finished")
    queue.recover()
    jobs, counts = queue.listing(1)
    done = [job for job in jobs if job.state == "done"]
    assert counts["done"] == 1 and len(done) == 1 and done[0].ended is not None


def test_queue_run_refuses_a_bad_grace_or_gpu_list_before_any_job(tmp_path, monkeypatch, capsys):
    from tests.support.cli import one_line_error

    runs_dir = tmp_path / "runs"
    JobQueue(runs_dir).add([["--seed", "1"]])
    monkeypatch.setenv("WORKBENCH_STOP_GRACE_S", "abc")
    assert "WORKBENCH_STOP_GRACE_S='abc'" in one_line_error(capsys, ["queue", "run", "--runs-dir", str(runs_dir)])
    monkeypatch.delenv("WORKBENCH_STOP_GRACE_S")
    for gpus in ("abc", "", "0,,1", "1e309", "\x1b[2J"):
        error = one_line_error(capsys, ["queue", "run", "--gpus", gpus, "--runs-dir", str(runs_dir)])
        assert "is not a GPU index" in error and "\x1b" not in error
    assert [job.state for job in JobQueue(runs_dir).jobs()] == ["pending"]


def test_messages_someone_elses_sqlite_database_is_refused_and_never_written(tmp_path, capsys):
    import sqlite3

    from tests.support.cli import one_line_error

    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    db = sqlite3.connect(runs_dir / "queue.sqlite")
    db.execute("CREATE TABLE notes (text TEXT)")
    db.commit()
    db.close()
    before = (runs_dir / "queue.sqlite").read_bytes()
    for argv in (["queue"], ["queue", "add", "--arch", "linear"], ["sweep", "--lr", "0.1,0.2"], ["queue", "run"]):
        error = one_line_error(capsys, [*argv, "--runs-dir", str(runs_dir)])
        assert "is not a workbench queue (it holds the tables 'notes', no jobs)" in error
    assert (runs_dir / "queue.sqlite").read_bytes() == before


def test_control_sequences_in_a_runs_folder_name_are_shown_as_text_when_queueing(tmp_path, capsys):
    runs_dir = tmp_path / "runs\nmade\x1b[2J"
    assert main(["queue", "add", "--arch", "linear", "--runs-dir", str(runs_dir)]) == 0
    assert main(["sweep", "--lr", "0.1,0.2", "--arch", "linear", "--runs-dir", str(runs_dir)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\\x1b[2J" in out and "runs\\x0amade" in out
    assert out.count("\n") == 4  # queue add says one line, sweep three (the first: what it checks)
