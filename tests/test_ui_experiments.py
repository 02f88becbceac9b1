"""The compare, queue and watch screens: Pilot tests and snapshots, on recorded runs and a real queue."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.recorded import recorded_events
from tests.support.ui import app_in, asynchronous, record_notifications, settle, wait_until
from workbench.core import runs
from workbench.core.config import RunConfig
from workbench.core.events import to_row
from workbench.core.experiments.queue import JobQueue
from workbench.core.lifecycle.follow import RunFollower
from workbench.ui.screens.compare import CompareScreen
from workbench.ui.screens.dashboard import DashboardScreen
from workbench.ui.screens.queue import QueueScreen
from textual.widgets import DataTable

NAMES = ("20250101-120000-basic_cnn", "20250101-130000-basic_cnn")


def is_watching(app) -> bool:
    """The app shows the dashboard of a run another process trains."""
    return isinstance(app.screen, DashboardScreen) and app.screen.followed is not None


def recorded_run(runs_dir: Path, name: str, lr: float, shift: float, status: str = "finished", rows=None) -> Path:
    """A run folder as the engine writes it, from the recorded events, accuracies moved by `shift`."""
    run_dir = runs_dir / name
    run_dir.mkdir(parents=True)
    config = RunConfig.from_mapping(dict(dataset="shapes", arch="basic_cnn", epochs=3, lr=lr, runs_dir=str(runs_dir)))
    (run_dir / "config.toml").write_text(config.to_toml())
    runs.write_status(run_dir, status)
    runs.write_run_info(run_dir, {"arch": "basic_cnn", "dataset": "shapes", "params": 62_958, "train_size": 9_000,
                                  "val_size": 1_000, "test_size": 2_000, "batch_size": 128, "device": "CPU (2 threads)",
                                  "classes": ["circle", "square"]})
    lines = []
    for event in recorded_events(run_dir):
        row = to_row(event)
        for key in ("val_acc", "test_acc", "best_val_acc", "best_test_acc", "final_test_acc"):
            if isinstance(row.get(key), float):
                row[key] = round(row[key] - shift, 4)
        lines.append(row)
    lines = lines if rows is None else lines[:rows]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return run_dir


def two_recorded_runs() -> list[Path]:
    return [recorded_run(Path("runs"), NAMES[0], 0.003, 0.0), recorded_run(Path("runs"), NAMES[1], 0.01, 0.05)]


async def open_compare(pilot) -> None:
    await pilot.press("r")
    assert await wait_until(pilot, lambda: getattr(pilot.app.screen, "summaries", None), 20)
    await pilot.press("space", "space", "c")  # both runs selected, newest first
    assert await wait_until(pilot, lambda: isinstance(pilot.app.screen, CompareScreen)
                            and pilot.app.screen.comparison is not None, 20)


@asynchronous
async def test_compare_screen_from_the_runs_list(in_tmp):
    two_recorded_runs()
    recorded_run(Path("runs"), "20240101-000000-linear", 0.1, 0.0)  # not selected: not compared
    app = app_in(in_tmp)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("r")
        assert await wait_until(pilot, lambda: getattr(pilot.app.screen, "summaries", None), 20)
        await pilot.press("space", "space", "c")
        assert await wait_until(pilot, lambda: isinstance(app.screen, CompareScreen) and app.screen.comparison, 20)
        screen = app.screen
        assert [run.name for run in screen.comparison.runs] == [NAMES[1], NAMES[0]]
        assert screen.comparison.differ == ("lr",)
        table = screen.query_one("#compare-table")
        # the result first, then what differs, then the rest; the run's name stays when scrolled
        assert [str(c.label) for c in table.columns.values()][:4] == ["run", "best val", "best test", "lr"]
        assert table.fixed_columns == 1
        assert len({screen.colours[name] for name in NAMES}) == 2
        screen._sort(type("Header", (), {"column_key": type("Key", (), {"value": "lr"})()})())
        await pilot.pause(0.1)
        assert str(table.get_row_at(0)[3]) == "0.003" and screen.sorted_by == "lr"


@pytest.mark.parametrize("size", [(120, 36), (80, 24)])
def test_compare_screen_snapshot(snap_compare, in_tmp, size):
    two_recorded_runs()

    async def ready(pilot):
        await open_compare(pilot)
        await settle(pilot)

    assert snap_compare(app_in(in_tmp), terminal_size=size, run_before=ready)


def fixed_queue() -> JobQueue:
    queue = JobQueue(Path("runs"))
    queue.add([["--arch", "linear", "--lr", lr, "--epochs", "2"] for lr in ("0.1", "0.01", "0.001")], sweep="sweep-demo")
    queue.claim("elsewhere:1", gpu="0")
    queue.finish(1, "done", 0)
    queue.claim("elsewhere:1", gpu="1")
    queue.finish(2, "failed", 1, "the loss became NaN at step 3; lower the learning rate")
    return queue


def test_queue_screen_snapshot(snap_compare, in_tmp):
    fixed_queue()

    async def ready(pilot):
        await pilot.press("r")
        assert await wait_until(pilot, lambda: getattr(pilot.app.screen, "summaries", None) is not None, 20)
        await pilot.press("u")
        assert await wait_until(pilot, lambda: isinstance(pilot.app.screen, QueueScreen)
                                and pilot.app.screen.query_one("#queue-table").row_count == 3, 20)
        await settle(pilot)

    assert snap_compare(app_in(in_tmp), terminal_size=(120, 24), run_before=ready)


@asynchronous
async def test_numbers_from_files_the_queue_screen_shows_a_damaged_row_as_damaged(in_tmp):
    import sqlite3

    queue = fixed_queue()
    db = sqlite3.connect(queue.path)
    db.execute("INSERT INTO jobs (args, sweep, state, run_dir, runner, gpu, attempts, reason, added) "
               "VALUES ('not json', '', 'pending', '', '', '', 'x', '', 0)")
    db.commit()
    db.close()
    app = app_in(in_tmp)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("r")
        assert await wait_until(pilot, lambda: getattr(app.screen, "summaries", None) is not None, 20)
        await pilot.press("u")
        assert await wait_until(pilot, lambda: isinstance(app.screen, QueueScreen)
                                and app.screen.query_one("#queue-table").row_count == 4, 20)
        table = app.screen.query_one("#queue-table")
        cells = " ".join(str(cell) for row in range(table.row_count) for cell in table.get_row_at(row))
        assert "damaged: its args are not a list of train flags; its attempts is 'x', not a number" in cells


@asynchronous
async def test_queue_screen_adds_the_form_and_runs_the_job(in_tmp, data_dir):
    app = app_in(in_tmp)
    notes = record_notifications(app)
    async with app.run_test(size=(120, 40)) as pilot:
        setup = app.setup_screen
        for field, value in (("epochs", "1"), ("image_size", "12")):
            setup.set_value(field, value)
        setup.query_one("#device").value = "cpu"
        setup.use_architecture("linear")
        setup.data_dir = str(data_dir)
        await pilot.press("r")
        await pilot.pause(0.2)
        await pilot.press("u")
        assert await wait_until(pilot, lambda: isinstance(app.screen, QueueScreen), 10)
        screen = app.screen
        offered = lambda: (screen.check_action("start_queue", ()), screen.check_action("stop_queue", ()))  # noqa: E731
        assert offered() == (None, None)  # nothing to start, nothing running: both dimmed
        await pilot.press("a")
        [job] = JobQueue(Path("runs")).jobs()
        assert job.state == "pending" and job.args[job.args.index("--arch") + 1] == "linear"
        assert job.args[job.args.index("--epochs") + 1] == "1"
        assert await wait_until(pilot, lambda: offered() == (True, None), 10)
        await pilot.press("g")
        assert await wait_until(pilot, lambda: offered()[1] is True or screen.runner.poll() is not None, 10)
        assert await wait_until(pilot, lambda: JobQueue(Path("runs")).jobs()[0].state in ("done", "failed"), 120)
        job = JobQueue(Path("runs")).jobs()[0]
        assert job.state == "done", job.reason
        assert runs.read_status(Path(job.run_dir))[0] == "finished"
        assert app.queue_runner_child.process.pid != __import__("os").getpid()  # trained in a process of its own
        screen = app.screen
        assert await wait_until(pilot, lambda: screen._states == {1: "done"}, 10)
        assert any(f"job 1 ({Path(job.run_dir).name}) done" in line for line in notes)  # a line in the app
        await pilot.press("enter")  # the job's run on the dashboard
        assert await wait_until(pilot, lambda: is_watching(app), 10)
        assert app.screen.run_dir == Path(job.run_dir)


def test_the_follower_reads_what_another_process_appends(in_tmp):
    run_dir = recorded_run(Path("runs"), NAMES[0], 0.003, 0.0, status="running", rows=7)
    trainer = runs.RunLock(run_dir)
    trainer.acquire()  # as the process training it holds it
    follower = RunFollower(run_dir)
    first, restarted = follower.poll()
    assert not restarted and [type(e).__name__ for e in first] == ["Notice", "RunStarted"] + ["StepMetrics"] * 5
    assert first[1].epochs == 3 and first[1].run_dir == run_dir
    full = recorded_run(Path("other"), NAMES[0], 0.003, 0.0).joinpath("metrics.jsonl").read_text()
    rest = full.split("\n", 7)[7]
    with open(run_dir / "metrics.jsonl", "a") as handle:
        handle.write(rest[:40])  # half a line: kept for the next poll
    assert follower.poll() == ([], False)
    trainer.release()  # the trainer died without a word
    assert [(type(e).__name__, e.status) for e in follower.poll()[0]] == [("StatusChanged", "interrupted")]
    assert follower.poll() == ([], False)  # said once
    with open(run_dir / "metrics.jsonl", "a") as handle:
        handle.write(rest[40:])
    kinds = [type(e).__name__ for e in follower.poll()[0]]
    assert kinds.count("EpochMetrics") == 3 and kinds[-1] == "Finished"


def append_rows(run_dir: Path, *events) -> None:
    with open(run_dir / "metrics.jsonl", "a") as handle:
        handle.writelines(json.dumps(to_row(event)) + "\n" for event in events)


@asynchronous
async def test_watch_screen_shows_a_run_and_sends_pause_and_stop(in_tmp):
    from workbench.core.events import StatusChanged, StepMetrics

    run_dir = recorded_run(Path("runs"), NAMES[0], 0.003, 0.0, status="running", rows=14)
    lock = runs.RunLock(run_dir)
    lock.acquire()  # as the trainer of another process would hold it
    try:
        app = app_in(in_tmp)
        async with app.run_test(size=(120, 40)) as pilot:
            app.watch_run(run_dir)
            assert await wait_until(pilot, lambda: is_watching(app) and app.screen.query("#charts")
                                    and app.screen.charts.point_count() > 0, 20)
            screen = app.screen
            assert screen.view.run_name == NAMES[0] and screen.view.phase == "training"
            await pilot.press("p")
            assert (run_dir / "control").read_text().strip() == "pause" and screen.asked == "pausing"
            append_rows(run_dir, StatusChanged("paused", "asked through the control file"))  # the trainer answers
            assert await wait_until(pilot, lambda: screen.view.phase == "paused" and not screen.asked, 10)
            assert "paused" in str(screen.query_one("#status").render())
            await pilot.press("p")
            assert (run_dir / "control").read_text().strip() == "run"
            append_rows(run_dir, StatusChanged("running"))
            assert await wait_until(pilot, lambda: screen.view.phase == "training", 10)
            await pilot.press("p", "p")  # a pause taken back before the trainer saw it: it never halts
            assert screen.asked == "going on" and (run_dir / "control").read_text().strip() == "run"
            append_rows(run_dir, *[e for e in recorded_events(run_dir) if isinstance(e, StepMetrics)][12:14])
            assert await wait_until(pilot, lambda: screen.asked == "", 10)  # steps go on: nothing left to wait for
            await pilot.press("x")
            assert (run_dir / "control").read_text().strip() == "stop" and screen.asked == "stopping"
            assert app.available("stop", screen) is False  # asked once: the key is gone until the trainer answers
    finally:
        lock.release()


@asynchronous
async def test_the_runs_list_opens_a_run_another_process_trains_in_watch(in_tmp):
    run_dir = recorded_run(Path("runs"), NAMES[0], 0.003, 0.0, status="running", rows=12)
    lock = runs.RunLock(run_dir)
    lock.acquire()
    try:
        app = app_in(in_tmp)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("r")
            assert await wait_until(pilot, lambda: getattr(app.screen, "summaries", None), 20)
            await pilot.press("enter")
            assert await wait_until(pilot, lambda: is_watching(app), 10)
    finally:
        lock.release()


def fixed_study() -> str:
    """A search study in the runs folder's journal: trial 0 finished, trial 1 pruned, both with run folders."""
    import optuna

    from workbench.core.experiments.search.space import parse_space
    from workbench.core.experiments.search.study import create_search

    base = RunConfig.from_mapping(dict(dataset="shapes", arch="basic_cnn", epochs=3, runs_dir="runs"))
    space, _ = parse_space({"lr": "1e-4:1e-1"}, base)
    url = str(Path("runs/search.journal").resolve())
    search = create_search("demo", url, base, space, trials=3, prune="median", seed=0)
    folders = [recorded_run(Path("runs"), NAMES[0], 0.003, 0.0),
               recorded_run(Path("runs"), NAMES[1], 0.01, 0.3, status="pruned", rows=20)]
    for number, (folder, lr) in enumerate(zip(folders, (0.003, 0.01))):
        runs.write_run_info(folder, runs.read_run_info(folder) | {"trial": {"study": "demo", "number": number, "storage": url}})
        pruned = number == 1
        search.study.add_trial(optuna.trial.create_trial(
            state=optuna.trial.TrialState.PRUNED if pruned else optuna.trial.TrialState.COMPLETE,
            value=None if pruned else 0.9, params={"lr": lr}, distributions=space.distributions(),
            intermediate_values={1: 0.4} if pruned else {1: 0.8, 2: 0.85, 3: 0.9},
            user_attrs={"run_dir": str(folder.resolve()), **({"pruned_because": "the median pruner stopped "
                        "it after epoch 1: validation accuracy 40.00%"} if pruned else {})}))
    return url


@asynchronous
async def test_the_queue_and_compare_screens_show_a_search_studys_trials(in_tmp):
    fixed_study()
    app = app_in(in_tmp)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("r")
        assert await wait_until(pilot, lambda: getattr(app.screen, "summaries", None), 20)
        runs_table = app.screen.query_one(DataTable)
        statuses = " ".join(str(cell) for row in range(runs_table.row_count) for cell in runs_table.get_row_at(row))
        assert "pruned" in statuses
        await pilot.press("u")
        assert await wait_until(pilot, lambda: isinstance(app.screen, QueueScreen)
                                and app.screen.query_one("#trial-table").row_count == 2, 20)
        table = app.screen.query_one("#trial-table")
        rows = [[str(cell) for cell in table.get_row_at(row)] for row in range(2)]
        assert rows[0][:3] == ["0", "finished", "90.00%"] and rows[0][4] == "lr 0.003"
        assert rows[1][:3] == ["1", "pruned", "40.00% (pruned)"] and rows[1][3].startswith("the median pruner stopped it")
        assert not app.screen.query_one("#queue-table").display  # no jobs: the trials take the room
        summary = str(app.screen.query_one("#study-summary").render())
        assert "study demo: 2 of 3 trials done (1 finished, 1 pruned, 0 failed)" in summary
        assert "best: trial 0, validation 90.00%" in summary and "\\x0a" not in summary
        table.focus()
        table.move_cursor(row=1)
        await pilot.press("enter")  # a trial's run on the dashboard
        assert await wait_until(pilot, lambda: is_watching(app), 20)
        await pilot.press("escape", "escape")
        await pilot.pause(0.2)
        await open_compare(pilot)
        study = str(app.screen.query_one("#compare-study").render())
        assert "study demo: 2 of 3 trials done" in study and "\\x0a" not in study
