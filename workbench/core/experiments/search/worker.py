"""A search worker (`workbench sweep join`): asks the study for the next trial, trains it as a
`workbench train` child (a normal run folder, through the one engine), and tells the study how
it ended: finished (its best validation accuracy), pruned, or failed with the trainer's sentence.

Several workers, on this machine or others, share one study through its storage: Optuna hands
each ask a distinct trial, so no trial is trained twice. A worker that asks after the study's
last place was taken marks that draw surplus and stops. A worker that dies leaves its trial
RUNNING: the next worker on the same machine sees that its process is gone (an RDB storage's
heartbeat does the same from any machine) and fails it with the reason, and Optuna's
RetryHeartbeatStaleTrialCallback puts its values back as a new trial. Stopping a worker (Ctrl-C,
SIGTERM) stops its trainers cleanly, each keeping its checkpoint, and hands their trials back.
"""

from __future__ import annotations

import copy
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from workbench.core.errors import WorkbenchError
from workbench.core.experiments.search.liveness import tag_is_dead, tag_pid, worker_tag
from workbench.core.experiments.search.results import counted_trials
from workbench.core.experiments.search.study import MAX_RETRIES, Search

POLL_S = 0.3
HEARTBEAT_EVERY_S = 5.0


@dataclass
class _Slot:
    gpu: str
    trial: Any = None  # optuna.Trial
    child: Any = None  # the launcher's Child
    stopping: bool = False
    run_dir_noted: bool = False


@dataclass
class SearchWorker:
    search: Search
    runs_dir: Path
    start_trial: Callable[[Any, int, str], Any]  # (config, trial number, gpu) -> a started Child
    slots: int = 1
    gpus: tuple[str, ...] = ()
    on_event: Callable[[str], None] = lambda line: None
    trained: list[int] = field(default_factory=list)  # trial numbers this worker trained to an end
    _stop: threading.Event = field(default_factory=threading.Event)

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> int:
        """Train trials until the study has its number of them (or a stop); returns how many ended here."""
        slots = [_Slot(self.gpus[i % len(self.gpus)] if self.gpus else "") for i in range(max(1, self.slots))]
        tag, beat = worker_tag(), 0.0
        exhausted = False
        while True:
            self.release_dead_trials()
            if not self._stop.is_set() and not exhausted:
                for slot in slots:
                    if slot.child is None and not self._start_next(slot, tag):
                        exhausted = True
                        break
            for slot in slots:
                if slot.child is None:
                    continue
                if self._stop.is_set() and not slot.stopping:
                    slot.stopping = True
                    slot.child.process.send_signal(signal.SIGTERM)
                self._note_run_dir(slot)
                if slot.child.process.poll() is not None:
                    self._end(slot)
            if time.monotonic() - beat > HEARTBEAT_EVERY_S:
                beat = time.monotonic()
                self._heartbeat(slots)
            if all(slot.child is None for slot in slots) and (exhausted or self._stop.is_set()):
                return len(self.trained)
            self._stop.wait(POLL_S)

    # ---- taking a trial --------------------------------------------------------------

    def _start_next(self, slot: _Slot, tag: str) -> bool:
        """Ask for a trial and start its trainer in the slot; False when the study has no place left."""
        study, wanted = self.search.study, self.search.trials
        waiting = any(trial.state.name == "WAITING" for trial in study.get_trials(deepcopy=False))
        if not waiting and len(counted_trials(study)) >= wanted:
            return False
        trial = study.ask(fixed_distributions=self.search.space.distributions())
        history = self._system_attrs(trial).get("retry_history") or []  # a retry: values of trials that did not end
        first = history[-1] if history else None  # the trial that failed last with these values
        retried = first is not None
        if not retried and len([t for t in counted_trials(study) if t.number <= trial.number]) > wanted:
            trial.set_user_attr("surplus", True)  # another worker took the last place first
            study.tell(trial, state=_state("FAIL"))
            return False
        before = str(trial.user_attrs.get("failed_because", ""))  # a retry carries its first trial's attributes
        for key, value in (("worker", tag), ("run_dir", ""), ("failed_because", "")):
            trial.set_user_attr(key, value)
        try:
            config = self.search.space.config(trial.params, self.search.base.replace(runs_dir=str(self.runs_dir)))
            slot.child = self.start_trial(config, trial.number, slot.gpu)
        except WorkbenchError as refused:
            self._tell_failed(trial, f"its values make no run: {refused}")
            return True
        slot.trial, slot.stopping, slot.run_dir_noted = trial, False, False
        values = ", ".join(f"{name} {value:g}" if isinstance(value, float) else f"{name} {value}"
                           for name, value in trial.params.items())
        again = f" (again, after trial {first}: {before})" if retried and before else (
            f" (again, after trial {first})" if retried else "")
        gpu = f" on GPU {slot.gpu}" if slot.gpu else ""
        self.on_event(f"trial {trial.number}{gpu}: {values or 'the base run'}{again}")
        return True

    def _note_run_dir(self, slot: _Slot) -> None:
        if slot.trial is not None and not slot.run_dir_noted:
            found = slot.child.run_dir()
            if found is not None:
                slot.trial.set_user_attr("run_dir", str(Path(found).resolve()))
                slot.run_dir_noted = True

    # ---- a trial's end -----------------------------------------------------------------

    def _end(self, slot: _Slot) -> None:
        trial, child = slot.trial, slot.child
        self._note_run_dir(slot)
        child.rows()  # the rows written since the last look: the end row among them
        end = next((row for row in reversed(child.seen) if row.get("type") == "end"), None)
        status = end.get("status") if end else None
        if status == "finished" and isinstance(end.get("best_val_acc"), (int, float)):
            self.search.study.tell(trial, float(end["best_val_acc"]))
            where = f" ({end.get('run_dir')})" if end.get("run_dir") else ""
            self.on_event(f"trial {trial.number}: finished, best validation accuracy {end['best_val_acc']:.2%}{where}")
            self.trained.append(trial.number)
        elif status == "pruned":
            trial.set_user_attr("pruned_because", str(end.get("reason") or "pruned"))
            self.search.study.tell(trial, state=_state("PRUNED"))
            self.on_event(f"trial {trial.number}: pruned ({end.get('reason') or 'by its pruner'})")
            self.trained.append(trial.number)
        elif status == "finished":
            self._tell_failed(trial, "it finished without a validation accuracy (no epoch was evaluated)")
        elif slot.stopping:  # the user stopped the worker: the trial goes back however often that happens
            self._hand_back(trial, "its worker was stopped (its run kept a checkpoint: `workbench train --resume RUN` "
                                   "goes on with it by hand)", limit=None)
        elif child.process.returncode < 0:  # killed by a signal (the OOM killer, say)
            self._hand_back(trial, f"its trainer was killed ({_signal_name(-child.process.returncode)})")
        elif status == "stopped":
            self._tell_failed(trial, "its run was stopped from outside the search (x in watch, its control file); "
                                     "`workbench train --resume RUN` finishes it by hand")
        else:
            self._tell_failed(trial, child.failure())
        slot.trial, slot.child = None, None

    def _tell_failed(self, trial, reason: str) -> None:
        trial.set_user_attr("failed_because", reason)
        self.search.study.tell(trial, state=_state("FAIL"))
        self.on_event(f"trial {trial.number}: failed ({reason})")

    def _hand_back(self, trial, reason: str, limit: int | None = MAX_RETRIES) -> None:
        """Fail the trial with `reason` and put its values back as a new trial (Optuna's retry)."""
        trial.set_user_attr("failed_because", reason)
        self.search.study.tell(trial, state=_state("FAIL"))
        self.on_event(f"trial {trial.number}: {reason}; {retry(self.search.study, trial._trial_id, limit)}")

    def release_dead_trials(self) -> None:
        """Trials left RUNNING by a worker of this machine that is gone: failed with the reason, and
        their values handed back; an RDB storage's heartbeat does this for every machine."""
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.storages import RDBStorage, fail_stale_trials

        study = self.search.study
        if isinstance(study._storage, RDBStorage):
            fail_stale_trials(study)
        for trial in study.get_trials(deepcopy=False, states=(_state("RUNNING"),)):
            tag = str(trial.user_attrs.get("worker", ""))
            if not (tag and tag_is_dead(tag)):
                continue
            storage = study._storage
            try:
                storage.set_trial_user_attr(trial._trial_id, "failed_because", f"its worker (process {tag_pid(tag)}) died")
                storage.set_trial_state_values(trial._trial_id, state=_state("FAIL"))
            except UpdateFinishedTrialError:  # another worker of this machine saw it first
                continue
            self.on_event(f"trial {trial.number}: its worker died; {retry(study, trial._trial_id, MAX_RETRIES)}")

    def _heartbeat(self, slots: list[_Slot]) -> None:
        from optuna.storages import RDBStorage

        storage = self.search.study._storage
        if isinstance(storage, RDBStorage):
            for slot in slots:
                if slot.trial is not None:
                    storage.record_heartbeat(slot.trial._trial_id)

    def _system_attrs(self, trial) -> dict[str, Any]:
        return self.search.study._storage.get_trial_system_attrs(trial._trial_id)


def retry(study, trial_id: int, limit: int | None) -> str:
    """Put a failed trial's values back as a new trial (Optuna's retry callback, on a copy: it
    appends to the trial's retry history in place); says what happened."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    frozen = copy.deepcopy(study._storage.get_trial(trial_id))
    tried = len(frozen.system_attrs.get("retry_history", ())) + 1
    if limit is not None and tried > limit:
        return f"its values were tried {tried} times, so the trial stays failed"
    RetryHeartbeatStaleTrialCallback(max_retry=limit)(study, frozen)
    return "its values go back to the study, to train again from the start"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _state(name: str):
    from optuna.trial import TrialState

    return TrialState[name]
