"""The trainer's side of a search: each evaluated epoch's validation accuracy is reported to the
trial, and the study's pruner says whether the trial stops there (with the reason, in words).

fit() asks only on rank 0 (through World.from_main), so under torchrun one process talks to the
storage and every rank gets the same answer at the same step. The storage is opened at the
first report, never on the other ranks.
"""

from __future__ import annotations

import math
import os
import statistics
from typing import Any

from workbench.core.errors import WorkbenchError
from workbench.core.wording import count as counted
from workbench.core.experiments.search.liveness import tag_pid
from workbench.core.experiments.search.study import STORAGE_ENV, WORKER_ENV, load_search, shown_storage, storage_url

PRUNER_WORDS = {"median": "the median pruner", "halving": "successive halving", "hyperband": "hyperband"}


class TrialPruner:
    """Reports a run's epochs to trial `number` of study `study` and asks its pruner."""

    def __init__(self, study: str, number: int, storage: str | None = None) -> None:
        self.study_name, self.number = study, number
        self.url = storage_url(storage, ".") if storage else os.environ.get(STORAGE_ENV, "")
        if not self.url:
            raise WorkbenchError(f"--trial needs the study's storage: --storage URL (or {STORAGE_ENV})", field="trial")
        self._trial: Any = None
        self._search: Any = None
        self.record = {"study": study, "number": number, "storage": shown_storage(self.url)}  # run.json's "trial"

    def check(self, config) -> None:
        """Before anything is written: the trial is there, running (a worker asked for it), and this
        run trains its values; a trial trains once."""
        from workbench.core.config import SETTINGS

        if self.number < 0:
            raise WorkbenchError(f"--trial {self.number} is not a trial number (0 or more)", field="trial")
        search = self._search = load_search(self.study_name, self.url)  # kept for the reports that follow
        frozen = next((trial for trial in search.study.get_trials(deepcopy=False) if trial.number == self.number), None)
        if frozen is None:
            raise WorkbenchError(f"study {self.study_name!r} has no trial {self.number}", field="trial")
        if frozen.state.name != "RUNNING":
            raise WorkbenchError(f"trial {self.number} of study {self.study_name!r} is {frozen.state.name.lower()}: a "
                                 "trial trains once, while it runs (`workbench sweep join` starts it)", field="trial")
        owner = str(frozen.user_attrs.get("worker", ""))
        if owner and owner != os.environ.get(WORKER_ENV, ""):  # a worker's trial: only the trainer it started
            raise WorkbenchError(f"trial {self.number} of study {self.study_name!r} is trained by a `sweep join` worker "
                                 f"(process {tag_pid(owner)}); a trial trains once", field="trial")
        declared = {item.name: item for item in SETTINGS}
        for name, value in frozen.params.items():
            item = declared.get(name)
            if item is not None and not _same(item.normal_form(getattr(config, name)), item.normal_form(item.coerce(str(value)))):
                raise WorkbenchError(f"trial {self.number} trains {item.option} {value}, not {getattr(config, name)}",
                                     field=name)

    def _open(self):
        if self._trial is None:
            import optuna

            self._search = self._search or load_search(self.study_name, self.url)
            study = self._search.study
            storage = study._storage
            trial_id = storage.get_trial_id_from_study_id_trial_number(
                storage.get_study_id_from_name(self.study_name), self.number)
            self._trial = optuna.trial.Trial(study, trial_id)
        return self._trial

    def replay(self, rows: list[dict[str, Any]]) -> None:
        """A resumed run's earlier epochs, reported again (a step already reported is kept as it was)."""
        for row in rows:
            if isinstance(row.get("val_acc"), (int, float)):
                self.judge(int(row["epoch"]), float(row["val_acc"]), ask=False)

    def judge(self, epoch: int, val_acc: float, ask: bool = True) -> str:
        """Report the epoch; the reason to stop the run here, or "" to go on."""
        trial = self._open()
        if epoch not in trial.storage.get_trial(trial._trial_id).intermediate_values:
            trial.report(val_acc, epoch)
        if not ask or not trial.should_prune():
            return ""
        return self._reason(epoch, val_acc)

    def _reason(self, epoch: int, val_acc: float) -> str:
        """The pruner's rule in words, with the numbers it compared."""
        from optuna.trial import TrialState

        kind, study = self._search.prune, self._search.study
        said = f"{PRUNER_WORDS.get(kind, kind)} stopped it after epoch {epoch}: validation accuracy {val_acc:.2%}"
        if kind == "median":  # Optuna's rule: this trial's best so far against finished trials at this epoch
            best = max(study._storage.get_trial(self._trial._trial_id).intermediate_values.values())
            done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            finished = [trial.intermediate_values[epoch] for trial in done if epoch in trial.intermediate_values]
            if finished:
                return (f"{said} (best so far {best:.2%}), below the median {statistics.median(finished):.2%} of "
                        f"{counted(len(finished), 'finished trial')} at epoch {epoch}")
        reached = [trial for trial in study.get_trials(deepcopy=False) if epoch in trial.intermediate_values]
        if not reached:
            return said
        return f"{said}, not in the top share of the {len(reached)} trials that reached epoch {epoch}"


def _same(given, drawn) -> bool:
    """A value given by hand and the trial's: floats to 6 significant digits (as `sweep join` prints them)."""
    if isinstance(given, float) and isinstance(drawn, float):
        return math.isclose(given, drawn, rel_tol=1e-5)
    return given == drawn
