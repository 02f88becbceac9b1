"""Work the app runs in thread workers: validation, model sizes, exports, image files. No UI here.

Everything that imports torch (through workbench.core.models/data/export) does so inside
these functions, so importing the UI stays fast and the first screen paints before torch loads.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from workbench.core.catalog import ARCHITECTURES, parse_user_arch
from workbench.core.config import RunConfig
from workbench.core.errors import ConfigError, WorkbenchError
from workbench.core.safe_read import open_regular

EXPORT_FORMATS = ("safetensors", "pt2")
IMAGE_LIMIT = 256 * 2**20  # an inspection PNG larger than this was not written by a run
FORM_ERROR = "_form"  # key for a problem that belongs to no single field


# ---- form validation -----------------------------------------------------------------


def validate_values(values: dict[str, Any]) -> tuple[RunConfig | None, dict[str, str]]:
    """(config, {}) when the values make a valid run, else (None, {field: problem}).

    Each field is checked alone first, so every bad field gets its own message at once;
    then the whole set, for rules that join fields (warm-up longer than the run, say).
    A problem is the sentence without the flag's name: the form shows it beside the field.
    The form's "devices" (how many processes train the run) is checked by devices_of.
    """
    values = {key: value for key, value in values.items() if key != "devices"}
    errors: dict[str, str] = {}
    for key, value in values.items():
        try:
            RunConfig.from_mapping({key: value})
        except WorkbenchError as error:
            errors[error.field or key] = _problem(error)
    if errors:
        return None, errors
    from workbench.core.training.start import check_start

    try:
        config = RunConfig.from_mapping(values)
        check_start(config)  # a weights file or starting run that is not there: the field says so
        return config, {}
    except WorkbenchError as error:
        return None, {error.field or FORM_ERROR: _problem(error)}


def devices_of(values: dict[str, Any], config: RunConfig | None) -> tuple[int, str]:
    """(devices, problem) for the form's devices field: 1 is a plain run in this process; more
    starts that many processes through torch.distributed.run (CUDA GPUs, or CPU processes)."""
    from workbench.launch import devices_problem

    text = str(values.get("devices", "1")).strip() or "1"
    try:
        devices = int(text)
    except ValueError:
        return 1, f"{text!r} is not a whole number of processes"
    if config is None or devices == 1:
        return devices, "" if 1 <= devices else f"{devices} is outside 1..256"
    visible = 0
    if config.device in ("cuda", "auto"):
        import torch

        visible = torch.cuda.device_count()
    return devices, devices_problem(devices, config.device, visible, config.recipe)


def _problem(error: WorkbenchError) -> str:
    return error.problem if isinstance(error, ConfigError) else str(error)


# ---- architectures -------------------------------------------------------------------


@dataclass(frozen=True)
class Architecture:
    name: str
    description: str


def architectures(extra: Iterable[str] = ()) -> list[Architecture]:
    """Every architecture, from the torch-free catalog, so the list paints at once; `extra` adds
    the user's own networks (path/to/file.py:factory) already in use."""
    users = [Architecture(arch, user_description(arch)) for arch in dict.fromkeys(extra) if parse_user_arch(arch)]
    return [Architecture(name, description) for name, description in ARCHITECTURES.items()] + users


def user_description(arch: str) -> str:
    file, factory = parse_user_arch(arch) or ("?", "?")
    return f"your network: {factory} in {file}"


def check_network_file(text: str, dataset: str, image_size: int) -> tuple[Architecture, int]:
    """The user's network file, loaded, built and given two blank images (all on the meta device:
    no memory, no random draws); raises WorkbenchError with one line naming the file and line."""
    import torch

    from workbench.core.models import check_forward, count_parameters, create

    text = text.strip()
    if parse_user_arch(text) is None:
        raise WorkbenchError("give the file and its factory as path/to/file.py:factory, e.g. nets/my_nets.py:make_net")
    arch = RunConfig.from_mapping({"arch": text}).arch  # the absolute path a run records
    try:
        channels, size, classes = data_shape(dataset, image_size)
    except (WorkbenchError, ValueError):
        channels, size, classes = 3, 32, 10  # the form marks the data set; check for CIFAR-10's shape
    with torch.device("meta"):
        model = create(arch, channels, classes, size)
        check_forward(arch, model, channels, classes, size, device="meta")
    return Architecture(arch, user_description(arch)), count_parameters(model)


def data_shape(dataset: str, image_size: int) -> tuple[int, int, int]:
    """(channels, size, classes) of a data set; raises WorkbenchError for a bad folder."""
    from workbench.core.data.load import dataset_shape

    return dataset_shape(dataset, image_size)


def parameter_count(arch: str, shape: tuple[int, int, int]) -> int | None:
    """Parameters of `arch` for a (channels, size, classes) shape; None when it cannot be built."""
    from workbench.core.models import fits, parameter_count

    channels, size, classes = shape
    try:
        if not fits(arch, channels, classes, size):
            return None  # shown as '-': this architecture cannot take images this small
        return parameter_count(arch, channels, classes, size)
    except Exception:  # an architecture that does not fit this shape: show '-' in its row
        return None


# ---- runs ----------------------------------------------------------------------------


def interrupted_runs(runs_dir: Path) -> list[Any]:
    """Summaries of runs whose status says running but whose process is gone, newest first."""
    from workbench.core.runs import list_runs

    return [summary for summary in list_runs(runs_dir) if summary.status == "interrupted"]


def resume_config(run_dir: Path) -> RunConfig:
    """The run's own settings, to continue it to the same number of epochs."""
    from workbench.core.runs import read_config

    return read_config(run_dir, for_resume=True)


@dataclass(frozen=True)
class ExportReport:
    run_dir: Path
    paths: tuple[Path, ...]
    checks: tuple[str, ...]  # one line per format: "safetensors ok (max |diff| 0.0e+00)"
    passed: bool
    compared_on: str  # what the formats were compared on, e.g. "64 test images"


def export_and_verify(run_dir: Path, formats: tuple[str, ...] = EXPORT_FORMATS) -> ExportReport:
    """Export and verify in a process of its own: torch.export changes global torch state that
    an optimizer stepping in the training thread reads, which killed runs that were training."""
    from workbench import launch

    report = launch.run("export", args=[str(Path(run_dir).resolve()), "--format", ",".join(formats), "--verify"])
    checks = tuple(
        f"{c['format']} {'ok' if c['passed'] else 'MISMATCH'} (max |logit diff| {c['max_abs_diff']:.1e})"
        for c in report["checks"]
    )
    passed = all(c["passed"] for c in report["checks"])
    compared_on = report["compared_on"] + (f"; {report['chosen'][0]}" if report["chosen"] else "")
    return ExportReport(run_dir, tuple(Path(p) for p in report["paths"]), checks, passed, compared_on)


def find_batch_size(config: RunConfig) -> tuple[int, str]:
    """(largest batch, why it stopped growing) from `workbench batch-find`, in a process of its own:
    its trials train, so they must not share torch's global state with a run training here."""
    from workbench import launch

    result = launch.run("batch-find", config=config)
    if result["largest"] is None:
        raise WorkbenchError(f"not even the first batch fits: {result['reason']}")
    return int(result["largest"]), str(result["reason"])


def evaluated(run_dir: Path) -> tuple[bool, int]:
    """(whether any held-out evaluation was recorded, steps trained), for 'export anyway?'."""
    from workbench.core.runs import epoch_records, read_metrics

    rows = read_metrics(run_dir)
    evaluations = [r for r in epoch_records(rows) if r.get("val_acc") is not None or r.get("test_acc") is not None]
    steps = max((r.get("global_step", r.get("steps_done", 0)) or 0 for r in rows), default=0)
    return bool(evaluations), int(steps)


# ---- image files ---------------------------------------------------------------------


@dataclass(frozen=True)
class ImageFile:
    path: Path
    width: int
    height: int
    modified: float


@dataclass(frozen=True)
class DecodedImage:
    path: Path
    width: int
    height: int
    rgb: bytes  # width * height * 3 bytes, row-major, exactly the file's pixels

    def pixel(self, x: int, y: int) -> tuple[int, int, int]:
        offset = (y * self.width + x) * 3
        return self.rgb[offset], self.rgb[offset + 1], self.rgb[offset + 2]


def scan_images(run_dir: Path) -> list[ImageFile]:
    """The run's PNGs (run_dir/images/*.png), newest first; sizes read from the file headers."""
    from PIL import Image

    found = []
    for path in (run_dir / "images").glob("*.png"):
        try:
            with open_regular(path, IMAGE_LIMIT) as handle, Image.open(handle) as image:
                width, height = image.size
            found.append(ImageFile(path, width, height, path.stat().st_mtime))
        except (OSError, ValueError, WorkbenchError):
            continue  # half-written or not a PNG: the next scan will see it
    return sorted(found, key=lambda f: (-f.modified, f.path.name))


def decode_png(path: Path) -> DecodedImage:
    """Decode to 8-bit RGB without any adjustment; a transparent pixel shows its RGB value."""
    from PIL import Image

    with open_regular(path, IMAGE_LIMIT) as handle, Image.open(handle) as image:
        rgb = image.convert("RGB")
        return DecodedImage(path, rgb.width, rgb.height, rgb.tobytes())


def open_in_viewer(path: Path) -> str:
    """Open the file in the system's image viewer; returns a sentence saying what happened."""
    if sys.platform == "darwin":
        opener = shutil.which("open")
    elif sys.platform.startswith("win"):
        os.startfile(path)  # type: ignore[attr-defined]
        return f"opened {path}"
    else:
        opener = shutil.which("xdg-open")
        if opener and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            return f"no graphical display here (over SSH?); copy the file instead: {path}"
    if not opener:
        return f"no system image viewer found (xdg-open or open); the file is {path}"
    subprocess.Popen(
        [opener, str(path)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    return f"opened {path.name} with {Path(opener).name}"
