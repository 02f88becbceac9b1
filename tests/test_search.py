"""Search: an Optuna study behind `workbench sweep --search tpe`, trained by `sweep join` workers
as normal runs through the one engine, pruned on validation accuracy, surviving a dead worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.cli import one_line_error, run_here

optuna = pytest.importorskip("optuna")

from optuna.trial import TrialState  # noqa: E402

from workbench.core.config import RunConfig  # noqa: E402
from workbench.core.experiments.search.space import parse_space  # noqa: E402
from workbench.core.experiments.search.results import counted_trials  # noqa: E402
from workbench.core.experiments.search.study import create_search, load_search  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
GOOD_LR, DEAD_LR = "0.02", "1e-7"  # linear on 12 px shapes: ~45% validation after 1 epoch at 0.02; chance at 1e-7


def tiny_args(data_dir, runs_dir, *more) -> list[str]:
    return ["--dataset", "shapes", "--arch", "linear", "--image-size", "12", "--augment", "none",
            "--device", "cpu", "--data-dir", str(data_dir), "--runs-dir", str(runs_dir), *more]


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
            "WORKBENCH_DIST_TIMEOUT_S": "60"}


def join(name: str, runs_dir: Path, out: Path, *more) -> subprocess.Popen:
    command = [sys.executable, "-m", "workbench", "sweep", "join", name, "--runs-dir", str(runs_dir), *more]
    return subprocess.Popen(command, env=environment(), stdout=open(out, "w"), stderr=subprocess.STDOUT)


def make_study(data_dir, runs_dir, name: str, *more) -> None:
    done = run_here("sweep", "--search", "tpe", "--study", name, *tiny_args(data_dir, runs_dir, *more))
    assert done.returncode == 0, done.stderr
    assert f"sweep join {name}" in done.stdout


def study(runs_dir: Path, name: str):
    return load_search(name, str(runs_dir / "search.journal")).study


# ---- the space, and refusals before anything is made -------------------------------------------


def test_a_space_reads_log_ranges_for_rates_linear_ranges_choices_and_fixed_values():
    space, fixed = parse_space({"lr": "1e-5:1e-1", "warmup_epochs": "0:2", "arch": "linear,basic_cnn",
                                "batch_size": "64:256", "epochs": "3"}, RunConfig())
    by_name = {dimension.name: dimension for dimension in space.dimensions}
    assert by_name["lr"].log and (by_name["lr"].low, by_name["lr"].high) == (1e-5, 1e-1)
    assert not by_name["warmup_epochs"].log and not by_name["batch_size"].log and by_name["batch_size"].integer
    assert by_name["arch"].choices == ("linear", "basic_cnn")
    assert fixed == {"epochs": "3"}
    distributions = space.distributions()
    assert distributions["lr"].log and distributions["batch_size"].step == 1
    assert "--lr 1e-05..0.1 (log scale)" in space.describe()


@pytest.mark.parametrize("flags, words", [
    (["--weight-decay", "0:0.1"], "start it above 0"),
    (["--lr", "0:0.1"], "must be greater than 0"),
    (["--lr", "0.1:0.01"], "low end below its high end"),
    (["--lr", "1e-4:x"], "--lr 1e-4:x refused"),
    (["--lr", "1e-4:1e-2:1"], "a range is LOW:HIGH"),
    (["--momentum", "0.5:2"], "refused"),
    (["--arch", "linear,nope"], "nope"),
    (["--val-fraction", "0"], "validation accuracy"),
    (["--val-fraction", "0,0.2"], "every value of a choice or range"),
    (["--study", "a b"], "a study's name is 1 to 100 letters"),
    (["--study", "$(touch x)"], "a study's name is 1 to 100 letters"),
    (["--study=-x"], "starting with a letter or digit"),
    (["--lr", "1e-4:1e-2"], "--trials N"),
])
def test_a_bad_search_is_one_line_and_makes_no_study(capsys, tmp_path, flags, words):
    runs_dir = tmp_path / "runs"
    trials = [] if words == "--trials N" else ["--trials", "4"]
    line = one_line_error(capsys, ["sweep", "--search", "tpe", *trials, "--runs-dir", str(runs_dir), *flags])
    assert words in line
    assert not runs_dir.exists()  # nothing written: no journal, no folder


def test_a_storage_file_that_is_not_a_journal_is_refused_and_left_as_it_was(capsys, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("hello\n")
    line = one_line_error(capsys, ["sweep", "--search", "tpe", "--trials", "2", "--lr", "1e-3:1e-1",
                                   "--storage", str(notes), "--runs-dir", str(tmp_path / "runs")])
    assert "is not an Optuna journal file" in line and notes.read_text() == "hello\n"


def test_commands_that_refuse_or_only_read_make_no_storage(capsys, tmp_path):
    for argv in (["sweep", "join", "nosuch", "--runs-dir", str(tmp_path / "empty")],
                 ["compare", "--sweep", "nosuch", "--runs-dir", str(tmp_path / "empty"),
                  "--storage", str(tmp_path / "new" / "x.journal")]):
        assert "no search storage at" in one_line_error(capsys, argv)
    assert not list(tmp_path.rglob("*.journal")) and not (tmp_path / "new").exists()


def test_two_workers_draw_from_their_own_random_streams(tmp_path):
    base = RunConfig.from_mapping({"dataset": "shapes", "arch": "linear"})
    space, _ = parse_space({"lr": "1e-5:1e-1"}, base)
    url = str(tmp_path / "study.journal")
    create_search("streams", url, base, space, trials=8, prune="none", seed=0)
    first, second = (load_search("streams", url, worker=tag).study for tag in ("host:b:1:9", "host:b:2:9"))
    drawn = [study.ask(fixed_distributions=space.distributions()).params["lr"] for study in (first, second)]
    assert drawn[0] != drawn[1]  # seeded alike, two joins would train the same values


def test_a_trial_is_trained_only_while_it_runs_and_only_with_its_values(capsys, tmp_path, data_dir):
    runs_dir, url = tmp_path / "runs", str(tmp_path / "study.journal")
    base = RunConfig.from_mapping({"dataset": "shapes", "arch": "linear", "data_dir": str(data_dir)})
    space, _ = parse_space({"lr": "1e-5:1e-1"}, base)
    search = create_search("once", url, base, space, trials=4, prune="median", seed=0)
    for lr in (0.02, 0.01):
        search.study.enqueue_trial({"lr": lr})
    ended = search.study.ask(fixed_distributions=space.distributions())
    search.study.tell(ended, state=TrialState.PRUNED)
    running = search.study.ask(fixed_distributions=space.distributions())
    owned = search.study.ask(fixed_distributions=space.distributions())
    from workbench.core.experiments.search.liveness import worker_tag

    owned.set_user_attr("worker", worker_tag())  # a live `sweep join` worker's trial
    args = ["train", *tiny_args(data_dir, runs_dir, "--epochs", "1"), "--study", "once", "--storage", url, "--trial"]
    cases = [(str(ended.number), "--lr", "0.02", "is pruned: a trial trains once"),
             (str(running.number), "--lr", "0.003", "trains --lr 0.01, not 0.003"),
             ("99", "--lr", "0.01", "has no trial 99"), ("-1", "--lr", "0.01", "is not a trial number"),
             (str(owned.number), "--lr", str(owned.params["lr"]), "is trained by a `sweep join` worker")]
    for number, *flags, words in cases:
        assert words in one_line_error(capsys, [*args, number, *flags])
    assert "--storage goes with --study" in one_line_error(capsys, ["train", "--storage", url, "--epochs", "1"])
    assert not runs_dir.exists()  # every refusal came before a run folder


def test_search_flags_without_a_search_are_refused(capsys, tmp_path):
    line = one_line_error(capsys, ["sweep", "--trials", "4", "--lr", "0.1,0.01", "--runs-dir", str(tmp_path)])
    assert "add --search tpe" in line


def test_without_optuna_the_search_says_how_to_install_it(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna raises ImportError
    line = one_line_error(capsys, ["sweep", "--search", "tpe", "--trials", "2", "--runs-dir", str(tmp_path)])
    assert 'pip install -e ".[search]"' in line


def test_joining_a_study_that_is_not_there_names_those_that_are(capsys, data_dir, tmp_path):
    runs_dir = tmp_path / "runs"
    make_study(data_dir, runs_dir, "real", "--trials", "2", "--lr", "1e-3:1e-1")
    line = one_line_error(capsys, ["sweep", "join", "typo", "--runs-dir", str(runs_dir)])
    assert "no study 'typo'" in line and "real" in line


# ---- trials: pruned in this process, shared by two workers, a worker killed ---------------------


def test_a_trial_at_a_rate_that_cannot_learn_is_pruned_before_its_last_epoch(data_dir, tmp_path, tiny):
    from workbench.core.experiments.search.pruning import TrialPruner
    from workbench.core.experiments.search.worker import SearchWorker  # noqa: F401  (the module imports)
    from workbench.core import runs as runs_module
    from workbench.core.runs import read_status
    from workbench.core.training.engine import fit

    runs_dir, url = tmp_path / "runs", str(tmp_path / "study.journal")
    base = tiny(arch="linear", image_size=12, epochs=3, augment="none", runs_dir=str(runs_dir))
    space, _ = parse_space({"lr": "1e-8:1e-1"}, base)
    search = create_search("prune", url, base, space, trials=4, prune="median", seed=0)
    for lr in (float(GOOD_LR), float(GOOD_LR) / 2, float(DEAD_LR)):
        search.study.enqueue_trial({"lr": lr})
    ended = {}
    for _ in range(3):
        trial = search.study.ask(fixed_distributions=space.distributions())
        pruner = TrialPruner("prune", trial.number, url)
        run_dir = fit(space.config(trial.params, base), lambda event: None, pruner=pruner)
        status, reason = read_status(run_dir)
        ended[trial.params["lr"]] = (run_dir, status, reason)
        if status == "finished":
            rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
            search.study.tell(trial, max(row["val_acc"] for row in rows if row["type"] == "epoch"))
    run_dir, status, reason = ended[float(DEAD_LR)]
    assert [ended[float(GOOD_LR)][1], ended[float(GOOD_LR) / 2][1]] == ["finished", "finished"]
    assert status == "pruned", reason
    assert reason.startswith("the median pruner stopped it after epoch 2") and "below the median" in reason
    info = json.loads((run_dir / "run.json").read_text())
    assert info["trial"] == {"study": "prune", "number": 2, "storage": url}
    epochs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert max(row["epoch"] for row in epochs if row["type"] == "epoch") == 2 < 3  # the median judges from epoch 2
    assert list(run_dir.glob("checkpoint*")), "a pruned trial keeps its checkpoint, as a stopped run does"
    fit(base.replace(epochs=4), lambda event: None, resume_dir=run_dir)  # resumed by hand, past its pruning
    assert json.loads((run_dir / "run.json").read_text())["trial"]["number"] == 2  # it stays the study's trial
    runs_module.write_status(run_dir, "pruned", reason)  # the listing below is of the pruned run
    listed = run_here("runs", "--runs-dir", runs_dir, "--plain")
    rows = [line.split("\t") for line in listed.stdout.splitlines()]
    assert any(row[0] == run_dir.name and "pruned" in row for row in rows)


def test_two_workers_share_three_trials_none_twice_and_compare_shows_the_study(data_dir, tmp_path):
    runs_dir = tmp_path / "runs"
    make_study(data_dir, runs_dir, "shared", "--trials", "3", "--epochs", "1", "--lr", "1e-3:1e-1",
               "--batch-size", "64,128")
    workers = [join("shared", runs_dir, tmp_path / f"worker{i}.txt") for i in range(2)]
    for worker in workers:
        assert worker.wait(timeout=240) == 0, (tmp_path / "worker0.txt").read_text()
    trials = counted_trials(study(runs_dir, "shared"))
    assert len(trials) == 3 and {trial.state for trial in trials} == {TrialState.COMPLETE}
    folders = [Path(trial.user_attrs["run_dir"]) for trial in trials]
    assert len(set(folders)) == 3  # one run folder per trial
    numbers = sorted(json.loads((folder / "run.json").read_text())["trial"]["number"] for folder in folders)
    assert numbers == [trial.number for trial in trials]  # each trial trained once, by one worker
    said = [(tmp_path / f"worker{i}.txt").read_text() for i in range(2)]
    lines = [line for text in said for line in text.splitlines()]
    started = [line.split(":")[0] for line in lines if line.startswith("trial ") and "lr" in line]
    assert len(started) == len(set(started)) == 3, said
    compared = run_here("compare", "--sweep", "shared", "--runs-dir", runs_dir)
    assert compared.returncode == 0, compared.stderr
    assert "3 runs compared" in compared.stdout
    assert "study shared: complete: 3 trials (3 finished, 0 pruned, 0 failed)" in compared.stdout
    best = max(trials, key=lambda trial: trial.value)
    rows = [line.split()[1] for line in compared.stdout.splitlines() if line.startswith("│ 2")]  # run names, in order
    where = {rows.index(Path(trial.user_attrs["run_dir"]).name): trial for trial in trials}  # two may share a second
    assert where[min(where)].value == best.value  # a study is listed best validation first
    assert f"best: trial {best.number}, validation {best.value:.2%}" in compared.stdout
    assert "importance" in compared.stdout and "batch size" in compared.stdout


def test_a_worker_killed_mid_trial_leaves_the_study_consistent(data_dir, tmp_path):
    runs_dir = tmp_path / "runs"
    make_study(data_dir, runs_dir, "killed", "--trials", "1", "--epochs", "2", "--lr", "1e-3:1e-1")
    first = join("killed", runs_dir, tmp_path / "first.txt")
    deadline = time.monotonic() + 120
    while not any(trial.user_attrs.get("run_dir") for trial in study(runs_dir, "killed").get_trials()):
        assert time.monotonic() < deadline and first.poll() is None, (tmp_path / "first.txt").read_text()
        time.sleep(0.2)
    first.send_signal(signal.SIGKILL)  # no goodbye: its trainer gets SIGTERM from the kernel (PDEATHSIG)
    first.wait()
    from workbench.core.experiments.search.results import counts

    said = counts(load_search("killed", str(runs_dir / "search.journal"))).line()
    assert "1 whose worker died (the next `sweep join` on its machine hands it back)" in said
    second = join("killed", runs_dir, tmp_path / "second.txt")
    assert second.wait(timeout=240) == 0, (tmp_path / "second.txt").read_text()
    trials = study(runs_dir, "killed").get_trials()
    dead = trials[0]
    assert dead.state == TrialState.FAIL and dead.user_attrs["failed_because"].startswith("its worker (process")
    assert "its worker died; its values go back" in (tmp_path / "second.txt").read_text()
    counted = counted_trials(study(runs_dir, "killed"))
    assert len(counted) == 1 and {trial.state for trial in counted} == {TrialState.COMPLETE}
    retry = next(trial for trial in counted if trial.system_attrs.get("failed_trial") == dead.number)
    assert retry.params == dead.params  # the dead worker's values, trained again
    assert not [trial for trial in trials if trial.state == TrialState.RUNNING]


# ---- data-parallel: rank 0 asks, every rank stops at the same step ------------------------------


needs_gloo = pytest.mark.skipif(not __import__("torch").distributed.is_available(), reason="no torch.distributed")


@needs_gloo
def test_a_data_parallel_trial_is_pruned_on_every_rank_at_the_same_step(data_dir, tmp_path):
    runs_dir, url = tmp_path / "runs", str(tmp_path / "study.journal")
    base = RunConfig.from_mapping({"dataset": "shapes", "arch": "linear", "image_size": 12, "epochs": 3,
                                   "data_dir": str(data_dir), "device": "cpu", "augment": "none"})
    space, _ = parse_space({"lr": "1e-8:1e-1"}, base)
    search = create_search("ddp", url, base, space, trials=3, prune="median", seed=0)
    for value in (0.55, 0.6):  # two finished trials the pruner compares with: ~55-60% after one epoch
        search.study.add_trial(optuna.trial.create_trial(
            params={"lr": 0.02}, distributions=space.distributions(), value=value + 0.2,
            intermediate_values={1: value, 2: value + 0.1, 3: value + 0.2}))
    search.study.enqueue_trial({"lr": float(DEAD_LR)})
    trial = search.study.ask(fixed_distributions=space.distributions())
    env = {**environment(), "WORKBENCH_SEARCH_STORAGE": url, "WORKBENCH_DIST_TIMEOUT_S": "40"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "workbench", "train", "--study", "ddp", "--trial", str(trial.number),
                           *tiny_args(data_dir, runs_dir, "--epochs", "3", "--lr", DEAD_LR)],
                          env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]  # a rank that went on alone would time out its collectives
    (run_dir,) = [path for path in runs_dir.iterdir() if path.is_dir()]
    assert (run_dir / "status").read_text().startswith("pruned")
    epochs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in epochs if row["type"] == "epoch"] == [1, 2]  # judged from epoch 2, of 3
    assert json.loads((run_dir / "run.json").read_text())["world_size"] == 2
    reported = load_search("ddp", url).study.get_trials()[trial.number].intermediate_values
    assert list(reported) == [1, 2]  # rank 0 alone reported, once an epoch


# ---- several machines: PostgreSQL, opt-in ----------------------------------------------------------


@pytest.mark.postgres
def test_two_workers_share_a_study_in_postgresql(data_dir, tmp_path):
    url = os.environ.get("WORKBENCH_TEST_POSTGRES")
    if not url:
        pytest.skip("set WORKBENCH_TEST_POSTGRES=postgresql://USER:PASSWORD@HOST/DB (see README)")
    runs_dir, name = tmp_path / "runs", f"pg-{os.getpid()}-{time.time_ns()}"
    make_study(data_dir, runs_dir, name, "--storage", url, "--trials", "4", "--epochs", "1", "--lr", "1e-3:1e-1")
    workers = [join(name, runs_dir, tmp_path / f"w{i}.txt", "--storage", url) for i in range(2)]
    for worker in workers:
        assert worker.wait(timeout=240) == 0, (tmp_path / "w0.txt").read_text()
    trials = counted_trials(load_search(name, url).study)
    assert len(trials) == 4 and {trial.state for trial in trials} == {TrialState.COMPLETE}


def test_a_trial_whose_values_failed_too_often_stays_failed_and_is_counted_once(tmp_path):
    from workbench.core.experiments.search.results import counts
    from workbench.core.experiments.search.worker import retry

    base = RunConfig.from_mapping({"dataset": "shapes", "arch": "linear"})
    space, _ = parse_space({"lr": "1e-5:1e-1"}, base)
    search = create_search("limit", str(tmp_path / "s.journal"), base, space, trials=2, prune="none", seed=0)
    params, spaces = {"lr": 0.01}, space.distributions()
    for number, history in ((0, []), (1, [0])):  # trial 0 failed, trial 1 (its retry) failed too
        search.study.add_trial(optuna.trial.create_trial(
            state=TrialState.FAIL, params=params, distributions=spaces,
            system_attrs={"failed_trial": 0, "retry_history": history} if history else {}))
    said = retry(search.study, search.study.get_trials()[1]._trial_id, limit=1)
    assert said == "its values were tried 2 times, so the trial stays failed"
    assert len(search.study.get_trials()) == 2  # nothing put back
    assert counts(search).failed == 1  # the first failure was superseded by its retry: one place, one failure
    assert retry(search.study, search.study.get_trials()[1]._trial_id, limit=None).startswith("its values go back")
    assert search.study.get_trials()[2].state == TrialState.WAITING
