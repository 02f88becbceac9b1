"""What a search study holds, for people: its counts, its best trial, each setting's importance,
its trials as the app lists them, and the studies a runs folder (or a set of runs) belongs to."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.core.errors import WorkbenchError
from workbench.core.experiments.search.liveness import tag_is_dead
from workbench.core.experiments.search.study import Search, load_search, open_storage, storage_url, study_names
from workbench.core.wording import count as counted_words


def counted_trials(study) -> list:
    """The trials that take the study's places: not a surplus draw (a worker that asked after the
    last place was taken), not a failure that was handed back (its retry counts instead)."""
    trials = study.get_trials(deepcopy=False)
    retried = {number for trial in trials for number in trial.system_attrs.get("retry_history", ())}
    return [trial for trial in trials if not trial.user_attrs.get("surplus") and trial.number not in retried]


@dataclass
class Counts:
    finished: int = 0
    pruned: int = 0
    failed: int = 0
    running: int = 0
    orphaned: int = 0  # running, by the trial's record, but its worker (of this machine) is gone
    waiting: int = 0
    wanted: int = 0
    reasons: dict[int, str] = field(default_factory=dict)  # failed trial number -> why

    def line(self) -> str:
        """"5 of 8 trials done (3 finished, 2 pruned, 0 failed), 1 training" or "complete: 8 trials (...)"."""
        done = self.finished + self.pruned + self.failed
        detail = f"{self.finished} finished, {self.pruned} pruned, {self.failed} failed"
        if done >= self.wanted and not self.running and not self.orphaned and not self.waiting:
            return f"complete: {counted_words(done, 'trial')} ({detail})"
        parts = [f"{done} of {self.wanted} trials done ({detail})"]
        if self.running:
            parts.append(f"{self.running} training")
        if self.orphaned:
            parts.append(f"{self.orphaned} whose worker died (the next `sweep join` on its machine hands "
                         f"{'it' if self.orphaned == 1 else 'them'} back)")
        if self.waiting:
            parts.append(f"{self.waiting} waiting to be trained again")
        return ", ".join(parts)


def counts(search: Search) -> Counts:
    from optuna.trial import TrialState

    tally = Counts(wanted=search.trials)
    for trial in counted_trials(search.study):
        if trial.state == TrialState.COMPLETE:
            tally.finished += 1
        elif trial.state == TrialState.PRUNED:
            tally.pruned += 1
        elif trial.state == TrialState.FAIL:
            tally.failed += 1
            tally.reasons[trial.number] = str(trial.user_attrs.get("failed_because", ""))
        elif trial.state == TrialState.RUNNING and tag_is_dead(str(trial.user_attrs.get("worker", ""))):
            tally.orphaned += 1
        elif trial.state == TrialState.RUNNING:
            tally.running += 1
        elif trial.state == TrialState.WAITING:
            tally.waiting += 1
    return tally


MIN_FOR_IMPORTANCE = 3  # finished trials before importances mean anything (Optuna gives equal shares below 2)


def importance(search: Search) -> dict[str, float]:
    """Each searched setting's share of what makes a trial good: Optuna's default evaluator
    (PED-ANOVA, which reads the study's direction) over finished trials; empty with too few."""
    import optuna
    from optuna.trial import TrialState

    finished = search.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not search.space.dimensions or len(finished) < MIN_FOR_IMPORTANCE:
        return {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return dict(optuna.importance.get_param_importances(search.study))
    except (ValueError, RuntimeError, ZeroDivisionError):
        return {}


def trial_runs(search: Search) -> dict[int, str]:
    """Trial number -> the run folder its trainer wrote (as its worker recorded it)."""
    return {trial.number: str(trial.user_attrs["run_dir"]) for trial in counted_trials(search.study)
            if trial.user_attrs.get("run_dir")}


def params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{name} {value:g}" if isinstance(value, float) else f"{name} {value}"
                     for name, value in params.items())


def best_trial(search: Search):
    """The finished trial with the best validation accuracy, or None before one finished."""
    try:
        return search.study.best_trial
    except ValueError:
        return None


def summary_lines(search: Search) -> list[str]:
    """The study in a few lines: its counts, its best trial, each setting's importance."""
    tally = counts(search)
    lines = [f"study {search.name}: {tally.line()}"]
    best = best_trial(search)
    if best is not None:
        where = f" in {best.user_attrs['run_dir']}" if best.user_attrs.get("run_dir") else ""
        values = f" ({params_text(best.params)})" if best.params else ""
        lines.append(f"best: trial {best.number}, validation {best.value:.2%}{values}{where}")
    shares = importance(search)
    if shares:
        said = ", ".join(f"{name.replace('_', ' ')} {share:.0%}" for name, share in shares.items())
        rough = "; rough with so few" if tally.finished < 10 else ""
        lines.append(f"importance (PED-ANOVA over {tally.finished} finished trials{rough}): {said}")
    return lines


@dataclass(frozen=True)
class TrialRow:
    """One trial as the app lists it."""

    number: int
    state: str  # finished, pruned, failed, training, waiting
    value: float | None  # the best validation accuracy (a pruned trial's: before it was stopped)
    run_dir: str
    params: str
    note: str  # why it was pruned or failed


STATE_WORDS = {"COMPLETE": "finished", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "training",
               "WAITING": "waiting"}


def trial_rows(search: Search) -> list[TrialRow]:
    rows = []
    for trial in counted_trials(search.study):
        note = trial.user_attrs.get("pruned_because") or trial.user_attrs.get("failed_because") or ""
        value = trial.value if trial.state.name == "COMPLETE" else (
            max(trial.intermediate_values.values()) if trial.state.name == "PRUNED" and trial.intermediate_values else None)
        rows.append(TrialRow(trial.number, STATE_WORDS.get(trial.state.name, trial.state.name.lower()), value,
                             str(trial.user_attrs.get("run_dir", "")), params_text(trial.params),
                             str(note) if trial.state.name in ("PRUNED", "FAIL") else ""))
    return rows


def local_searches(runs_dir: str | Path, known: dict[str, Search] | None = None) -> list[Search]:
    """The studies in the runs folder's own journal (none when it has no journal or Optuna is
    missing). `known` (name -> Search, from an earlier call) are kept with their storage, which
    then reads only what the journal gained since, not the whole file again."""
    url = storage_url(None, runs_dir)
    if not Path(url).is_file():
        return []
    known = known or {}
    try:
        storage = next(iter(known.values())).study._storage if known else open_storage(url)
        return [known.get(name) or load_search(name, url, storage=storage) for name in study_names(storage)]
    except WorkbenchError:
        return []


def study_of_runs(run_dirs: list[Path]) -> Search | None:
    """The study whose trials these runs all are, when its storage is a journal file this machine
    reads (an RDB storage's password is not kept in run.json); None otherwise."""
    from workbench.core.runs import read_run_info

    records = []
    for run_dir in run_dirs:
        try:
            records.append(read_run_info(Path(run_dir)).get("trial") or {})
        except Exception:  # an unreadable run.json: compare shows it with its problem
            return None
    names = {(record.get("study"), record.get("storage")) for record in records}
    if len(names) != 1 or None in next(iter(names)):
        return None
    name, url = next(iter(names))
    if "://" in str(url) or not Path(str(url)).is_file():
        return None
    try:
        return load_search(str(name), str(url))
    except WorkbenchError:
        return None
