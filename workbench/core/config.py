"""RunConfig: every setting of a training run, its defaults, validation and TOML form.

The CLI, the TUI form and resumed runs all build a RunConfig through `from_mapping`,
so a bad value gets the same one-line message wherever it comes from.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from workbench.core.catalog import ARCHITECTURES, RECIPES, USER_ARCH_HINT, parse_user_arch
from workbench.core.errors import ConfigError, WorkbenchError

DATASET_NAMES = ("shapes", "cifar10", "cifar100", "mnist", "fashion-mnist")
OPTIMIZERS = ("sgd", "nesterov", "adam", "adamw")
SCHEDULES = ("constant", "step", "cosine", "onecycle")
AUGMENTATIONS = ("crop", "flip", "rotate", "cutout")
PRECISIONS = ("fp32", "bf16", "fp16")
DEVICES = ("auto", "cuda", "mps", "cpu")
MAX_EPOCHS, MAX_BATCH = 100_000, 1_048_576  # beyond these a number is a typo, not a plan
RESIZE_MODES = ("stretch", "crop", "pad")  # the same as data/folders.py's (this module imports no torch)
NORMALIZATIONS = ("train", "none")  # per-channel mean/std of the training split, or pixels / 255 only


def default_data_dir() -> Path:
    """Where named data sets are downloaded and decoded caches live."""
    import platformdirs

    return Path(platformdirs.user_data_dir("workbench")) / "data"


@dataclass(frozen=True)
class RunConfig:
    """One training run's settings. Units are in the comments."""

    dataset: str = "shapes"  # a name in DATASET_NAMES or a folder path
    data_dir: str = ""  # "" = the user data dir (see default_data_dir)
    arch: str = "basic_cnn"
    recipe: str = "standard"  # how to train: a name in catalog.RECIPES (the speedrun is one)
    epochs: int = 10
    batch_size: int = 128  # images per optimizer step
    optimizer: str = "adamw"
    lr: float = 0.003  # peak learning rate
    momentum: float = 0.9  # SGD momentum / Adam beta1
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    warmup_epochs: float = 0.0  # linear warm-up (onecycle always warms up for 25% of steps)
    label_smoothing: float = 0.0
    augment: tuple[str, ...] = ("crop", "flip")
    image_size: int = 0  # pixels per side; 0 = the data set's native size (32 for folders)
    resize: str = "stretch"  # how a folder image of another shape becomes square: stretch, crop (centre) or pad
    normalize: str = "train"  # "none" feeds pixels / 255 as the seed's ToTensor did (to reproduce it)
    precision: str = "fp32"
    device: str = "auto"
    seed: int = 0
    runs_dir: str = "runs"
    compile: bool = False  # torch.compile the model (slow warm-up, faster steps on GPU)
    early_stop: int = 0  # evaluated epochs without a better held-out metric before the run ends; 0 = off
    early_stop_on: str = "acc"  # the metric early stopping watches: acc (higher is better) or loss
    early_stop_delta: float = 0.0  # the smallest change that counts as better
    keep_best: int = 1  # the best epochs kept as checkpoints (best.pt is the best of them)
    val_fraction: float = 0.1  # share of the training data held out to select the best epoch; 0 = none
    test_fraction: float = 0.1  # test share of a folder that has no test/ (or val/) folder
    stream_over_mb: float = 0.0  # folders decoding to more stream from files; 0 = a quarter of RAM
    preset: str = ""  # the preset the form was filled from; it decides nothing itself

    # ---- construction -------------------------------------------------------------

    @classmethod
    def from_mapping(
        cls, values: dict[str, Any], base: RunConfig | None = None, *, check_paths: bool = True
    ) -> RunConfig:
        """Build a validated config from loose values (strings from a form or CLI are fine).

        `check_paths=False` reads a record (a past run's config) whose data folder may be gone.
        """
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise WorkbenchError(
                f"unknown setting {unknown[0]!r}; known settings: {', '.join(known)}"
            )
        merged = dataclasses.asdict(base or cls())
        for key, raw in values.items():
            if raw is None:
                continue
            merged[key] = _coerce(key, raw, known[key].type)
        user_file = parse_user_arch(str(merged["arch"])) if "arch" in values else None
        if check_paths and user_file:  # a network file chosen now (a resumed run has its own copy)
            file = _expand(user_file[0], "arch")
            if not file.is_file():
                raise ConfigError("arch", f"{file} {'is not a file' if file.exists() else 'does not exist'}")
            merged["arch"] = f"{_absolute(user_file[0])}:{user_file[1]}"  # the run records where it came from
        config = cls(**merged)
        config.validate(check_paths=check_paths)
        return config

    @classmethod
    def from_toml(cls, path: Path, base: RunConfig | None = None, *, check_paths: bool = True) -> RunConfig:
        if Path(path).exists() and not Path(path).is_file() and not Path(path).is_dir():
            raise WorkbenchError(f"config file {path} is not a regular file (a pipe or a device?)")
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise WorkbenchError(f"config file {path} does not exist") from None
        except IsADirectoryError:
            raise WorkbenchError(f"config file {path} is a folder; give a .toml file") from None
        except UnicodeDecodeError:
            raise WorkbenchError(f"config file {path} is not UTF-8 text; save it as UTF-8 TOML") from None
        except OSError as error:
            raise WorkbenchError(f"cannot read config file {path} ({error.strerror or error})") from None
        except tomllib.TOMLDecodeError as error:
            raise WorkbenchError(f"config file {path} is not valid TOML: {error}") from None
        data = {key.replace("-", "_"): value for key, value in data.items()}
        return cls.from_mapping(data, base, check_paths=check_paths)

    def to_toml(self) -> str:
        lines = []
        for key, value in dataclasses.asdict(self).items():
            lines.append(f"{key} = {_toml_value(value)}")
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["augment"] = list(self.augment)
        return data

    def replace(self, **changes: Any) -> RunConfig:
        return RunConfig.from_mapping(changes, base=self)

    # ---- validation ---------------------------------------------------------------

    def validate(self, *, check_paths: bool = True) -> None:
        """Raise ConfigError naming the first bad setting and what is allowed."""
        if not self.dataset.strip():
            raise ConfigError("dataset", f"give a data set: one of {', '.join(DATASET_NAMES)}, or a folder")
        if self.dataset not in DATASET_NAMES and not _looks_like_path(self.dataset):
            raise ConfigError(
                "dataset", f"{self.dataset!r} is neither a folder nor one of {', '.join(DATASET_NAMES)}"
            )
        if check_paths and _looks_like_path(self.dataset) and self.dataset not in DATASET_NAMES:
            folder = _expand(self.dataset, "dataset")
            if not folder.is_dir():
                what = "is not a folder" if folder.exists() else "does not exist"
                raise ConfigError("dataset", f"{folder} {what}")
        user_file = parse_user_arch(self.arch)
        if user_file is None and self.arch not in ARCHITECTURES:
            raise ConfigError("arch", f"unknown architecture {self.arch!r}; choose one of "
                                      f"{', '.join(ARCHITECTURES)}, {USER_ARCH_HINT}")

        _choice("recipe", self.recipe, tuple(RECIPES))
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("schedule", self.schedule, SCHEDULES)
        _choice("precision", self.precision, PRECISIONS)
        _choice("device", self.device, DEVICES)
        _choice("resize", self.resize, RESIZE_MODES)
        _choice("normalize", self.normalize, NORMALIZATIONS)
        _choice("early_stop_on", self.early_stop_on, ("acc", "loss"))
        if self.early_stop < 0:
            raise ConfigError("early_stop", f"{self.early_stop} must be 0 (off) or a number of epochs")
        if not 1 <= self.keep_best <= 100:
            raise ConfigError("keep_best", f"{self.keep_best} is outside 1..100")
        _in_range("early_stop_delta", self.early_stop_delta, 0.0, 1e6)
        for op in self.augment:  # "none" alone became (); mixed with others it is a mistake
            _choice("augment", op, AUGMENTATIONS)
        _positive("epochs", self.epochs)
        _positive("batch_size", self.batch_size)
        _positive("lr", self.lr)
        _in_range("momentum", self.momentum, 0.0, 1.0, include_high=False)
        _in_range("weight_decay", self.weight_decay, 0.0, 1.0)
        _in_range("label_smoothing", self.label_smoothing, 0.0, 1.0, include_high=False)
        _in_range("val_fraction", self.val_fraction, 0.0, 0.9)
        _in_range("test_fraction", self.test_fraction, 0.0, 0.9, include_low=False)
        _in_range("stream_over_mb", self.stream_over_mb, 0.0, 1e9)
        _in_range("warmup_epochs", self.warmup_epochs, 0.0, float(self.epochs))
        if self.image_size and not 8 <= self.image_size <= 512:
            raise ConfigError("image_size", f"{self.image_size} is outside 8..512 (0 = the data set's native size)")
        if not 0 <= self.seed < 2**63:
            raise ConfigError("seed", f"{self.seed} is outside 0..2**63-1")
        if self.epochs > MAX_EPOCHS:
            raise ConfigError("epochs", f"{self.epochs} is more than {MAX_EPOCHS:,}")
        if self.batch_size > MAX_BATCH:
            raise ConfigError("batch_size", f"{self.batch_size} is more than {MAX_BATCH:,}")
        if self.runs_dir.strip() == "":
            raise ConfigError("runs_dir", "give a folder for the run folders")
        _expand(self.runs_dir, "runs_dir")
        if self.data_dir:
            _expand(self.data_dir, "data_dir")

    @property
    def is_folder_dataset(self) -> bool:
        return self.dataset not in DATASET_NAMES

    def resolved_data_dir(self) -> Path:
        return _expand(self.data_dir, "data_dir") if self.data_dir else default_data_dir()


# ---- helpers ---------------------------------------------------------------------------


def _absolute(file: str) -> str:
    try:
        return str(Path(file).expanduser().absolute())
    except (RuntimeError, OSError, ValueError):
        return file  # validate() names the problem


def _looks_like_path(text: str) -> bool:
    if any(sep in text for sep in ("/", "\\", ".", "~")):
        return True
    try:
        return Path(text).expanduser().exists()
    except (RuntimeError, OSError, ValueError):
        return False


def _expand(text: str, key: str) -> Path:
    """~ and ~user expanded; an unknown user is a bad setting, not a crash."""
    try:
        return Path(text).expanduser()
    except RuntimeError:
        raise ConfigError(key, f"{text!r}: the user in its ~ is not known here") from None


def _choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(key, f"{value!r} is not one of {', '.join(allowed)}")


def _positive(key: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(key, f"{value} must be greater than 0")


def _in_range(
    key: str,
    value: float,
    low: float,
    high: float,
    include_low: bool = True,
    include_high: bool = True,
) -> None:
    above = value >= low if include_low else value > low
    below = value <= high if include_high else value < high
    if not (above and below):
        left = "[" if include_low else "("
        right = "]" if include_high else ")"
        raise ConfigError(key, f"{value} is outside {left}{low}, {high}{right}")


def _coerce(key: str, raw: Any, annotation: Any) -> Any:
    """Turn a string or TOML value into the field's type, or say why it can't be."""
    kind = str(annotation)
    try:
        if kind.startswith("tuple"):
            items = raw.split(",") if isinstance(raw, str) else list(raw)
            items = [str(item).strip().lower() for item in items if str(item).strip()]
            return () if items in ([], ["none"]) else tuple(dict.fromkeys(items))
        if kind == "bool":
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind == "int":
            if isinstance(raw, float) and not raw.is_integer():
                raise ValueError
            if isinstance(raw, bool):
                raise ValueError
            return int(str(raw).strip()) if isinstance(raw, str) else int(raw)
        if kind == "float":
            if isinstance(raw, bool):
                raise ValueError
            number = float(raw)
            if not math.isfinite(number):
                raise ConfigError(key, f"{raw!r} is not a finite number")
            return number
        return str(raw).strip()
    except (TypeError, ValueError):
        expected = {"int": "a whole number", "float": "a number", "bool": "true or false"}
        raise ConfigError(key, f"{raw!r} is not {expected.get(kind, 'valid')}") from None


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


__all__ = [
    "AUGMENTATIONS",
    "DATASET_NAMES",
    "DEVICES",
    "OPTIMIZERS",
    "PRECISIONS",
    "RunConfig",
    "SCHEDULES",
    "default_data_dir",
]
