"""A search is an Optuna study: its storage, its sampler and pruner, and what it records.

One machine: a journal file in the runs folder (Optuna's JournalStorage; several local workers
share it through its file lock). Several machines: an RDB URL (`postgresql://...`; Optuna's
heartbeat then hands a dead worker's trial back, wherever the worker ran) or a journal file on a
shared disk. The study's user attributes keep what every worker needs: the base run config (TOML),
the search space, how many trials to train, and the pruner, so `sweep join` needs only the name.
"""

from __future__ import annotations

import hashlib
import tomllib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.core.config import RunConfig
from workbench.core.errors import WorkbenchError
from workbench.core.experiments.search.space import SearchSpace

DEFAULT_STORAGE = "search.journal"  # inside the runs folder
STORAGE_ENV = "WORKBENCH_SEARCH_STORAGE"  # how a trial's trainer learns the storage (no password on a command line)
WORKER_ENV = "WORKBENCH_SEARCH_WORKER"  # the worker that started a trial's trainer (its tag): the trial's owner
SAMPLERS = ("tpe",)
PRUNERS = ("none", "median", "halving", "hyperband")
HEARTBEAT_S, GRACE_S = 10, 60  # RDB storages: a trial whose worker has been silent this long goes back
MAX_RETRIES = 2  # a trial whose worker died is tried again this many times, then left failed


def require_optuna():
    try:
        import optuna
    except ImportError:
        raise WorkbenchError('a search needs Optuna, an optional extra: pip install -e ".[search]" '
                             "(or pip install optuna)") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # the retry callback's
    return optuna


def storage_url(given: str | None, runs_dir: str | Path) -> str:
    """The storage as given (an RDB URL or a journal file), else the runs folder's journal file."""
    if given:
        return given if "://" in given else str(Path(given).expanduser().resolve())
    return str(Path(runs_dir).expanduser().resolve() / DEFAULT_STORAGE)


def shown_storage(url: str) -> str:
    """The storage for people: an RDB URL without its password."""
    if "://" not in url:
        return url
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL sqlalchemy reads: Optuna will say so when it is opened
        return url.split("@")[-1]


def open_storage(url: str, create: bool = False):
    """Optuna's storage for `url`: RDB (with heartbeats and retries) or a journal file, which
    only `create` makes (a command that refuses or reads writes nothing) and which must be one."""
    optuna = require_optuna()
    if "://" not in url:
        _check_journal(Path(url), create)
    try:
        if "://" in url:
            from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

            if url.startswith("sqlite:///") and not create and not Path(url.removeprefix("sqlite:///")).is_file():
                raise WorkbenchError(f"no search storage at {url.removeprefix('sqlite:///')}: `workbench sweep "
                                     "--search tpe` makes one (give --storage where the study is)")
            return RDBStorage(url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S, skip_table_creation=not create,
                              heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES))
        from optuna.storages.journal import JournalFileBackend

        if create:
            Path(url).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(url))
    except WorkbenchError:
        raise
    except Exception as error:  # a server that is not there, a driver not installed, a folder not writable
        raise WorkbenchError(f"the search storage {shown_storage(url)} cannot be opened: "
                             f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}") from None


def _check_journal(path: Path, create: bool) -> None:
    """A journal file that is there must be one (Optuna appends to whatever it is given); one
    that is not there is made only by a command that makes a study."""
    if not path.exists():
        if not create:
            raise WorkbenchError(f"no search storage at {path}: `workbench sweep --search tpe` makes one "
                                 "(give --storage where the study is)")
        return
    if not path.is_file():
        raise WorkbenchError(f"the search storage {path} is not a file")
    try:
        with path.open("rb") as file:
            first = file.readline(4096)
    except OSError as error:
        raise WorkbenchError(f"the search storage {path} cannot be read: {error.strerror or error}") from None
    if first and not first.lstrip().startswith(b'{"op_code"'):
        raise WorkbenchError(f"{path} is not an Optuna journal file; give --storage a new file or an existing journal")


STUDY_NAME_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def check_study_name(name: str) -> str:
    """A study's name goes into commands to paste: letters, digits, '-', '_' and '.', 1 to 100 of them."""
    if not name or len(name) > 100 or not set(name) <= STUDY_NAME_CHARACTERS or not name[0].isalnum():
        raise WorkbenchError(f"--study {name!r}: a study's name is 1 to 100 letters, digits, '-', '_' or '.', "
                             "starting with a letter or digit")
    return name


def startup_trials(trials: int) -> int:
    """Random trials before TPE models the rest: Optuna's 10 would leave a 14-trial search almost
    all random, so a third of the trials, at least 3 and at most Optuna's 10."""
    return max(3, min(10, trials // 3))


def median_startup(trials: int) -> int:
    """Finished trials the median pruner waits for: a median of one trial is that trial."""
    return max(2, min(5, trials // 4))


def longest_epochs(space: SearchSpace, base: RunConfig) -> int:
    """The most epochs a trial trains (--epochs may itself be searched)."""
    for dimension in space.dimensions:
        if dimension.name == "epochs":
            return max(int(choice) for choice in dimension.choices) if dimension.choices else int(dimension.high or 1)
    return base.epochs


def make_pruner(kind: str, most_epochs: int, trials: int):
    """Optuna's pruner for --prune, sized to the study: a median needs a few finished trials to
    compare with and judges from epoch 2 of a run of 3 or more; halving and hyperband rungs run
    from epoch 1 to the last."""
    import optuna.pruners as pruners

    if kind == "median":  # epoch 1 says little (on shapes the grid's best point trailed the median there);
        warmup = 2 if most_epochs >= 3 else 0  # steps are epochs counted from 1: judged from epoch 2
        return pruners.MedianPruner(n_startup_trials=median_startup(trials), n_warmup_steps=warmup)
    if kind == "halving":
        return pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if kind == "hyperband":
        return pruners.HyperbandPruner(min_resource=1, max_resource=max(most_epochs, 1), reduction_factor=3)
    return pruners.NopPruner()


@dataclass(frozen=True)
class Search:
    """A study, opened with what its creator recorded."""

    study: Any  # optuna.Study
    url: str
    base: RunConfig
    space: SearchSpace
    trials: int
    prune: str

    @property
    def name(self) -> str:
        return self.study.study_name


def study_names(storage) -> list[str]:
    return [summary.study_name for summary in require_optuna().get_all_study_summaries(storage, include_best_trial=False)]


def refuse_taken_name(name: str, storage, url: str) -> None:
    if name in study_names(storage):
        raise WorkbenchError(f"a study named {name!r} is already in {shown_storage(url)}; "
                             "join it with `workbench sweep join`, or give another --study")


def create_search(name: str, url: str, base: RunConfig, space: SearchSpace, *, trials: int, prune: str,
                  seed: int) -> Search:
    optuna = require_optuna()
    check_study_name(name)
    storage = open_storage(url, create=True)
    refuse_taken_name(name, storage, url)
    try:
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize",
                                    sampler=optuna.samplers.TPESampler(seed=seed))
        for key, value in {"config": base.to_toml(), "space": space.to_json(), "trials": trials, "prune": prune,
                           "seed": seed, "metric": "best validation accuracy"}.items():
            study.set_user_attr(key, value)
    except Exception as error:  # the storage's own failure (a full disk, a server that went away)
        raise WorkbenchError(f"the study could not be written to {shown_storage(url)}: {type(error).__name__}: "
                             f"{str(error).splitlines()[0][:200] if str(error) else ''}") from None
    return load_search(name, url, storage=storage)


def load_search(name: str, url: str, *, worker: str = "", storage=None) -> Search:
    """The study `name` in the storage (`storage`: one already open for `url`), with its sampler and
    pruner as its creator chose them. A `worker` draws from its own random stream (the study's
    seed and the worker's tag): two workers seeded alike would draw the same values."""
    optuna = require_optuna()
    storage = storage if storage is not None else open_storage(url)
    try:
        bare = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        known = study_names(storage)
        others = f"; it has {', '.join(known)}" if known else "; `workbench sweep --search tpe` makes one"
        raise WorkbenchError(f"no study {name!r} in {shown_storage(url)}{others}") from None
    attrs = bare.user_attrs
    if not {"config", "space", "trials"} <= set(attrs):
        raise WorkbenchError(f"study {name!r} in {shown_storage(url)} was not made by `workbench sweep --search`")
    base = RunConfig.from_mapping(tomllib.loads(attrs["config"]), check_paths=False)
    space = SearchSpace.from_json(attrs["space"])
    trials, prune = int(attrs["trials"]), str(attrs.get("prune", "none"))
    seed = attrs.get("seed") if isinstance(attrs.get("seed"), int) else 0
    if worker:
        seed = int.from_bytes(hashlib.sha256(f"{seed}:{worker}".encode()).digest()[:4], "big")
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials(trials))
    study = optuna.load_study(study_name=name, storage=storage, sampler=sampler,
                              pruner=make_pruner(prune, longest_epochs(space, base), trials))
    return Search(study, url, base, space, trials, prune)
