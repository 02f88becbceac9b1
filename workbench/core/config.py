"""RunConfig: every setting of a training run, declared once (see core/settings.py), and its TOML form.

The CLI, the TUI form and resumed runs all build a RunConfig through `from_mapping`,
so a bad value gets the same one-line message wherever it comes from.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.core.catalog import ARCHITECTURES, RECIPES, USER_ARCH_HINT, parse_user_arch
from workbench.core.errors import ConfigError, WorkbenchError
from workbench.core.settings import Form, declarations, setting

DATASET_NAMES = ("shapes", "cifar10", "cifar100", "mnist", "fashion-mnist")
OPTIMIZERS = ("sgd", "nesterov", "adam", "adamw")
SCHEDULES = ("constant", "step", "cosine", "onecycle")
AUGMENTATIONS = ("crop", "flip", "rotate", "cutout")
PRECISIONS = ("fp32", "bf16", "fp16")
DEVICES = ("auto", "cuda", "mps", "cpu")
MAX_EPOCHS, MAX_BATCH = 100_000, 1_048_576  # beyond these a number is a typo, not a plan
RESIZE_MODES = ("stretch", "crop", "pad")  # the same as data/folders.py's (this module imports no torch)
# train: per-channel mean/std of the training split; none: pixels / 255 only; weights: those the
# starting weights were trained with. auto: weights when the run starts from trained weights, else train.
NORMALIZATIONS = ("auto", "train", "none", "weights")
STANDARD = ("standard", "finetune")  # the recipes that read the form's optimizer, schedule and augmentation
FINETUNE = ("finetune",)
BATCHNORM_MODES = ("frozen", "train")


def default_data_dir() -> Path:
    """Where named data sets are downloaded and decoded caches live."""
    import platformdirs

    return Path(platformdirs.user_data_dir("workbench")) / "data"


@dataclass(frozen=True)
class RunConfig:
    """One training run's settings, each declared once: its default and its `Setting` (units in the help)."""

    dataset: str = setting(
        "shapes", f"{', '.join(DATASET_NAMES)}, or a folder in ImageFolder layout",
        suggest=DATASET_NAMES, form=Form("input", "data set", "shapes, cifar10, … or a folder", "run"))
    data_dir: str = setting(
        "", "where named data sets and decoded caches live", default_text="the user data folder",
        resume="where named sets are cached; the images are the same", sweep=False, compared=False)
    arch: str = setting("basic_cnn", "architecture, see `workbench models`", suggest=tuple(ARCHITECTURES))
    recipe: str = setting(
        "standard", "how to train: standard (the flags below), speedrun (its own optimizer, schedule and "
        "augmentation; --arch speedrun) or finetune (trained weights: the head first, then every layer)",
        choices=tuple(RECIPES), form=Form("select", "recipe", group="run"))
    weights: str = setting(
        "", "the starting weights: a .safetensors/.pt/.pth file of this architecture, or none (random)",
        default_text="the architecture's own: ImageNet for tv: networks, random for the others",
        form=Form("input", "weights", "file or none; empty = own", "run"))
    init_from: str = setting(
        "", "start from another run's weights: RUN (its best epoch) or RUN:last; a new head when the classes "
        "differ", default_text="no run",
        sweep=False, form=Form("input", "start from run", "a run folder", "run"))
    epochs: int = setting(
        10, "passes over the training data", low=1, high=MAX_EPOCHS,
        resume="a resume continues to a larger target", form=Form("input", "epochs"))
    batch_size: int = setting(
        128, "images per optimizer step, the global batch: with several processes (torchrun, --gpus) each "
        "takes an equal share, so the learning rate means the same", low=1, high=MAX_BATCH,
        form=Form("input", "batch size", "images per step"))
    optimizer: str = setting("adamw", "the optimizer", choices=OPTIMIZERS, recipes=STANDARD,
                             form=Form("select", "optimizer"))
    lr: float = setting(0.003, "peak learning rate", low=0, high=1e9, open_low=True, recipes=STANDARD, log_scale=True,
                        form=Form("input", "learning rate", "peak"))
    momentum: float = setting(0.9, "SGD momentum or Adam beta1", low=0, high=1, open_high=True, recipes=STANDARD,
                              form=Form("input", "momentum", "SGD momentum / Adam β1"))
    weight_decay: float = setting(5e-4, "L2 penalty per step, decoupled for adamw", low=0, high=1,
                                  recipes=STANDARD, log_scale=True, form=Form("input", "weight decay"))
    schedule: str = setting("cosine", "learning-rate schedule", choices=SCHEDULES, recipes=STANDARD,
                            form=Form("select", "schedule"))
    warmup_epochs: float = setting(
        0.0, "linear warm-up length in epochs (onecycle always warms up for 25% of steps)", low=0,
        high=MAX_EPOCHS, recipes=STANDARD, form=Form("input", "warm-up epochs"))
    label_smoothing: float = setting(0.0, "share of the target spread over the other classes", low=0, high=1,
                                     open_high=True, recipes=STANDARD, form=Form("input", "label smoothing"))
    freeze_epochs: int = setting(
        1, "finetune: epochs that train only the head, the rest of the network frozen", low=0, high=MAX_EPOCHS,
        recipes=FINETUNE, form=Form("input", "freeze epochs", "head only, backbone frozen"))
    backbone_lr_mult: float = setting(
        0.1, "finetune: the backbone's learning rate as a share of the head's, once it trains", low=0, high=1,
        open_low=True, recipes=FINETUNE, form=Form("input", "backbone lr ×", "share of the head's lr"))
    batchnorm: str = setting(
        "frozen", "finetune: the backbone's BatchNorm statistics: frozen (kept from the starting weights, for "
        "small data) or train (updated once the backbone trains)", choices=BATCHNORM_MODES, recipes=FINETUNE,
        form=Form("select", "BN statistics"))
    clip_grad_norm: float = setting(
        0.0, "largest L2 norm of all gradients together before a step; 0 = off", low=0, high=1e6,
        recipes=STANDARD, form=Form("input", "clip grad norm", "max gradient norm; 0 = off"))
    augment: tuple[str, ...] = setting(
        ("crop", "flip"), f"comma list of {', '.join(AUGMENTATIONS)}, or none", choices=AUGMENTATIONS,
        recipes=STANDARD, form=Form("checks", "augment"))
    image_size: int = setting(
        0, "pixels per side", low=8, high=512, zero_is="the starting weights' size, else the data set's own",
        default_text="the starting weights' size, else the data set's own; 32 for folders",
        form=Form("input", "image size", "0 = the weights' or the data's", "data"))
    resize: str = setting(
        "auto", "a folder image of another shape: stretch it, crop its centre square, or pad it; auto: crop for "
        "ImageNet weights, the starting run's mode, else stretch", choices=("auto", *RESIZE_MODES),
        form=Form("select", "resize", group="data"))
    normalize: str = setting(
        "auto", "train: per-channel mean/std of the training split (exports carry them); none: pixels / 255 "
        "only, as the seed tutorials' ToTensor; weights: the starting weights' own; auto: weights when "
        "there are starting weights, else train", choices=NORMALIZATIONS)
    val_fraction: float = setting(
        0.1, "share of the training data held out to pick the best epoch; 0 = none", low=0, high=0.9,
        form=Form("input", "validation", "share of train held out; 0 = none", "data"))
    test_fraction: float = setting(0.1, "test share of a folder without test/ or val/", low=0, high=0.9,
                                   open_low=True)
    stream_over_mb: float = setting(
        0.0, "stream folders whose decoded size passes this many MB from their files", low=0, high=1e9,
        default_text="a quarter of RAM", resume="only how images reach the device, not which")
    early_stop: int = setting(
        0, "stop after this many evaluated epochs without a better validation metric", low=1, high=MAX_EPOCHS,
        zero_is="off", metavar="EPOCHS", resume="when to stop, not how to train",
        form=Form("input", "early stop", "epochs without a better val metric; 0 = off", "stopping"))
    early_stop_on: str = setting("acc", "the metric early stopping watches (acc: higher is better)",
                                 choices=("acc", "loss"), resume="when to stop, not how to train",
                                 form=Form("select", "early stop on", group="stopping"))
    early_stop_delta: float = setting(0.0, "the smallest change of the metric that counts as better", low=0,
                                      high=1e6, resume="when to stop, not how to train")
    keep_best: int = setting(
        1, "keep the K best epochs as checkpoints besides last.pt; best.pt stays the best", low=1, high=100,
        metavar="K", resume="which checkpoints stay, not how to train",
        form=Form("input", "keep best", "best epochs kept as checkpoints", "stopping"))
    precision: str = setting("fp32", "number format of the forward pass (fp16 keeps a loss scale in the "
                             "checkpoint)", choices=PRECISIONS, form=Form("select", "precision", group="machine"))
    device: str = setting("auto", "auto = cuda, then mps, then cpu", choices=DEVICES,
                          resume="the same steps on another device", form=Form("select", "device", group="machine"))
    seed: int = setting(0, "seeds the split, the order and the initial weights", low=0, high=2**63 - 1,
                        form=Form("input", "seed", group="machine"))
    compile: bool = setting(
        False, "torch.compile the model: slower start, faster GPU steps",
        resume="the same model, compiled or not", form=Form("check", "torch.compile", "on (slower start)", "machine"))
    runs_dir: str = setting(
        "runs", "where run folders go", resume="where the run folder is, not what it holds", sweep=False,
        compared=False, form=Form("input", "runs folder", "where run folders go", "machine"))
    preset: str = setting("", "the preset the form was filled from; it decides nothing itself", flag=False,
                          resume="a label; it decides nothing")

    # ---- construction -------------------------------------------------------------

    @classmethod
    def from_mapping(
        cls, values: dict[str, Any], base: RunConfig | None = None, *, check_paths: bool = True
    ) -> RunConfig:
        """Build a validated config from loose values (strings from a form or CLI are fine).

        `check_paths=False` reads a record (a past run's config) whose data folder may be gone.
        """
        known = {item.name: item for item in SETTINGS}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise WorkbenchError(
                f"unknown setting {unknown[0]!r}; known settings: {', '.join(known)}"
            )
        merged = dataclasses.asdict(base or cls())
        for key, raw in values.items():
            if raw is not None:
                merged[key] = known[key].coerce(raw)
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
        """The settings of a TOML file, bounded like flags; a bad one is named with the file."""
        data = read_toml_table(path)
        try:
            return cls.from_mapping(data, base, check_paths=check_paths)
        except ConfigError as error:
            raise ConfigError(error.field or "", f"{error.problem} (in {path})") from None
        except WorkbenchError as error:
            raise WorkbenchError(f"{error} (in {path})", field=error.field) from None

    def to_toml(self) -> str:
        import tomli_w

        return tomli_w.dumps(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["augment"] = list(self.augment)
        return data

    def replace(self, **changes: Any) -> RunConfig:
        return RunConfig.from_mapping(changes, base=self)

    def absolute(self) -> RunConfig:
        """This config with every path absolute, so a child (or a job run later, elsewhere) reads the
        same folders, and two spellings of one folder are one value."""
        return RunConfig.from_mapping(whole_paths(self.to_dict()), base=self, check_paths=False)

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
        for item in SETTINGS:
            item.check(getattr(self, item.name))
        if self.warmup_epochs > self.epochs:
            raise ConfigError("warmup_epochs", f"{self.warmup_epochs} is more than the run's {self.epochs} epochs")
        if self.recipe == "finetune" and self.freeze_epochs > self.epochs:
            raise ConfigError("freeze_epochs", f"{self.freeze_epochs} is more than the run's {self.epochs} epochs "
                                               f"(head only throughout is {self.epochs})")
        if self.runs_dir.strip() == "":
            raise ConfigError("runs_dir", "give a folder for the run folders")
        _expand(self.runs_dir, "runs_dir")
        if self.data_dir:
            _expand(self.data_dir, "data_dir")

    def resolved_data_dir(self) -> Path:
        return _expand(self.data_dir, "data_dir") if self.data_dir else default_data_dir()


SETTINGS = declarations(RunConfig)
SETTING_BY_NAME = {item.name: item for item in SETTINGS}


def ignored_by(recipe: str) -> tuple[str, ...]:
    """The settings `recipe` does not read (the form greys them out)."""
    return tuple(item.name for item in SETTINGS if not item.reads(recipe))


def unread_notices(config: RunConfig) -> list[str]:
    """A sentence naming the flags given a value other than their default that `config`'s recipe
    does not read (recorded, but without effect: said, not left to look as if they acted); [] for none."""
    unread = [f"{item.option} {item.words(getattr(config, item.name))}" for item in SETTINGS
              if item.flag and not item.reads(config.recipe)
              and item.normal_form(getattr(config, item.name)) != item.normal_form(item.default)]
    if not unread:
        return []
    return [f"the {config.recipe} recipe does not read {', '.join(unread)}: it trains as if "
            f"{'it was' if len(unread) == 1 else 'they were'} not given"]


def changed_on_resume(saved: dict[str, Any], config: RunConfig) -> list[tuple[str, Any, Any]]:
    """(setting, checkpoint's value, config's value) of each setting a resume must keep but that differs.

    A setting the checkpoint does not record (it predates the setting) is not compared."""
    now = config.to_dict()
    was, wanted = {**saved, **whole_paths(saved)}, {**now, **whole_paths(now)}  # 'tiny' and './tiny/' are one folder
    def differs(item) -> bool:  # crop,flip and flip,crop are one augmentation
        try:
            return item.normal_form(was[item.name]) != item.normal_form(wanted[item.name])
        except TypeError:  # a hand-edited record of another type: a change
            return True

    return [(item.name, saved[item.name], now[item.name]) for item in SETTINGS
            if not item.resumable and item.name in saved and differs(item)]


def whole_paths(values: dict[str, Any]) -> dict[str, Any]:
    """The path settings among `values` made absolute (a data set's name is not a path)."""
    def whole(path: Any) -> Any:
        return str(Path(path).expanduser().resolve()) if isinstance(path, str) and path else path

    changes = {key: whole(values[key]) for key in ("runs_dir", "data_dir") if key in values}
    if isinstance(values.get("dataset"), str) and values["dataset"] not in DATASET_NAMES:
        changes["dataset"] = whole(values["dataset"])
    if isinstance(values.get("weights"), str) and values["weights"].lower() not in ("", "none"):
        changes["weights"] = whole(values["weights"])
    if isinstance(values.get("init_from"), str) and values["init_from"]:
        run, suffix = values["init_from"], ""
        if run.endswith((":last", ":best")):
            run, suffix = run[:-5], run[-5:]
        if _looks_like_path(run):  # a run's name alone is looked up in the runs folder
            changes["init_from"] = whole(run) + suffix
    user = parse_user_arch(values["arch"]) if isinstance(values.get("arch"), str) else None
    if user is not None:
        changes["arch"] = f"{whole(user[0])}:{user[1]}"
    return changes


def read_toml_table(path: Path) -> dict[str, Any]:
    """A config file's keys (dashes read as underscores) and values; one-line errors naming the file."""
    from workbench.core.safe_read import MB, NotReadable, read_text

    try:  # through the one guard: a pipe or a device never blocks, a huge file is refused
        data = tomllib.loads(read_text(path, 4 * MB))
    except NotReadable as error:
        if Path(path).is_dir():
            raise WorkbenchError(f"config file {path} is a folder; give a .toml file") from None
        raise WorkbenchError(f"config file {error}") from None
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
    table: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name in table:  # clip_grad_norm and clip-grad-norm: which one was meant is not ours to guess
            raise WorkbenchError(f"config file {path} sets {name} twice ({spelled[name]} and {key}); keep one")
        table[name], spelled[name] = value, key
    return table


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


__all__ = [
    "AUGMENTATIONS",
    "DATASET_NAMES",
    "DEVICES",
    "OPTIMIZERS",
    "PRECISIONS",
    "RunConfig",
    "SCHEDULES",
    "SETTINGS",
    "default_data_dir",
]
