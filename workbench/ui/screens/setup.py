"""SetupScreen: choose an architecture and hyperparameters, see what is wrong, press s to start."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Header, Input, Select
from textual.worker import Worker, WorkerState, get_current_worker

from workbench.core.config import SETTINGS, RunConfig
from workbench.core.errors import WorkbenchError
from workbench.core.wording import count as counted
from workbench.ui import workers
from workbench.ui.screens.network_file import NetworkFileScreen
from workbench.ui.settings import write_last_values
from workbench.ui.widgets.arch_list import ArchitectureList
from workbench.ui.widgets.form import LABELS, HyperparameterForm
from workbench.ui.widgets.footer import FittedFooter

DEBOUNCE_S = 0.2  # wait for typing to pause before validating or recounting
NUMBER_FIELDS = {item.name for item in SETTINGS if item.kind in ("int", "float")} | {"devices"}  # no "/" in them


class ModelsDescribed(Message):
    def __init__(self, architectures: list[workers.Architecture], shape_text: str, size_note: str = "",
                 no_counts: str = "") -> None:
        super().__init__()
        self.architectures = architectures
        self.shape_text = shape_text
        self.size_note = size_note  # what image size 0 means for this data set ("" when a size is given)
        self.no_counts = no_counts  # why nothing can be counted: the data set's own sentence


class ParamsCounted(Message):
    def __init__(self, arch: str, params: int | None) -> None:
        super().__init__()
        self.arch = arch
        self.params = params


class Validated(Message):
    def __init__(self, config: RunConfig | None, errors: dict[str, str], then: str | None, devices: int = 1) -> None:
        super().__init__()
        self.config = config
        self.errors = errors
        self.then = then  # what the check was for: "start", "lr-find", "batch-find", or None (an edit)
        self.devices = devices  # processes to train it: 2 or more start a data-parallel job


class SetupScreen(Screen):
    """The first screen: architecture list beside the hyperparameter form."""

    TITLE = "workbench"
    SUB_TITLE = "set up a run"
    BINDINGS = [
        # `/` from anywhere but a field that takes text with slashes (a data set folder, a weights file)
        Binding("slash", "filter_architectures", "Filter", tooltip="Type to filter the architectures", priority=True),
        Binding("escape", "leave_field", "Leave the field", show=False),
    ]

    class StartRequested(Message):
        """The form holds a valid run; the app starts it."""

        def __init__(self, config: RunConfig, devices: int = 1) -> None:
            super().__init__()
            self.config = config
            self.devices = devices  # 2 or more: a data-parallel job in processes of its own

    class TuneRequested(Message):
        """The form holds a valid run; the app runs a tuning tool ("lr-find" or "batch-find") on it."""

        def __init__(self, config: RunConfig, tool: str) -> None:
            super().__init__()
            self.config = config
            self.tool = tool

    def __init__(self, values: dict[str, Any], *, data_dir: str, config_dir: Path) -> None:
        super().__init__()
        self.initial_values = values
        self.data_dir = data_dir
        self.config_dir = config_dir
        self.errors: dict[str, str] = {}
        self._described_for: tuple[str, str] | None = None
        self._debounce: Timer | None = None
        self._start_pending = False

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="setup-body"):
            chosen = self.initial_values.get("arch", RunConfig.arch)
            yield ArchitectureList(chosen, workers.architectures(extra=[chosen]), id="arch-list"
            )
            yield HyperparameterForm(id="form")
        yield FittedFooter()

    def on_mount(self) -> None:
        with self.prevent(HyperparameterForm.Changed):
            self.query_one(HyperparameterForm).load(self.initial_values)
        self.query_one("#arch-table").focus()
        self.call_after_refresh(self._after_edit)  # torch loads in a worker once the screen is up

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "filter_architectures":  # False: the key goes on to the focused field as typing
            focused = self.focused
            return not isinstance(focused, Input) or (focused.id or "") in NUMBER_FIELDS
        return True

    def action_filter_architectures(self) -> None:
        self.set_focus(self.query_one("#arch-filter", Input))  # at once: the keys typed next are already on their way

    def action_leave_field(self) -> None:
        """Escape in a form field leaves it for the architecture list (as on the inspect screen), so the
        letters are the app's keys again; what was typed stays."""
        if isinstance(self.focused, Input):
            self.set_focus(self.query_one("#arch-table"))

    # ---- values -----------------------------------------------------------------------

    def form_values(self) -> dict[str, Any]:
        """The run's settings, for RunConfig.from_mapping (without the launch's devices)."""
        values = self._form_and_launch_values()
        values.pop("devices", None)
        return values

    def _form_and_launch_values(self) -> dict[str, Any]:
        return {
            **self.query_one(HyperparameterForm).values(),
            "arch": self.query_one(ArchitectureList).chosen,
            "data_dir": self.data_dir,
        }

    @property
    def runs_dir(self) -> Path:
        """The runs folder the form names now (before the form exists, the one it will show)."""
        if self.is_mounted:
            text = str(self.query_one(HyperparameterForm).values().get("runs_dir") or "")
        else:
            text = str(self.initial_values.get("runs_dir") or "")
        try:
            return Path(text or RunConfig.runs_dir).expanduser()
        except RuntimeError:  # an unknown ~user: the form marks the field
            return Path(text)

    def architectures(self) -> list[workers.Architecture]:
        return self.query_one(ArchitectureList).architectures

    def use_architecture(self, name: str) -> None:
        self.query_one(ArchitectureList).choose(name)
        self._edited()

    def use_preset(self, name: str) -> None:
        self.query_one("#preset", Select).value = name

    def request_start(self) -> None:
        """Validate what the form says now and, when it is valid, ask the app to start it."""
        if self._start_pending:
            self.notify("Already starting: checking the form.", severity="warning")
            return
        self._start_pending = True
        self._validate_then(self._form_and_launch_values(), "start")

    def request_tuning(self, tool: str) -> None:
        """Check the form, then ask the app to run `tool` ("lr-find", "batch-find") on it."""
        self._validate_then(self._form_and_launch_values(), tool)

    def set_value(self, field: str, text: str) -> None:
        """Put a value into a text field, as if typed (a tool's answer)."""
        self.query_one(f"#{field}", Input).value = text

    # ---- reacting to edits ------------------------------------------------------------

    @on(HyperparameterForm.Changed)
    @on(ArchitectureList.Chosen)
    def _edited(self) -> None:
        if self._debounce is not None:
            self._debounce.stop()
        self._debounce = self.set_timer(DEBOUNCE_S, self._after_edit)

    @on(HyperparameterForm.PresetChosen)
    def _preset(self, event: HyperparameterForm.PresetChosen) -> None:
        if "arch" in event.values:
            self.query_one(ArchitectureList).choose(event.values["arch"])
        self._edited()

    def _after_edit(self) -> None:
        values = self._form_and_launch_values()
        self._validate(values)
        shape_key = (str(values["dataset"]), str(values["image_size"]))
        if shape_key != self._described_for:
            self._described_for = shape_key
            users = [arch.name for arch in self.architectures() if arch.name not in workers.ARCHITECTURES]
            self._describe_models(*shape_key, chosen=values["arch"], extra=users)

    # ---- workers ----------------------------------------------------------------------

    @work(thread=True, exclusive=True, exit_on_error=False, group="validate", description="checking the form")
    def _validate(self, values: dict[str, Any]) -> None:
        self._post_validation(values, None)

    @work(thread=True, exclusive=True, exit_on_error=False, group="start", description="checking the form")
    def _validate_then(self, values: dict[str, Any], then: str) -> None:
        self._post_validation(values, then)

    def _post_validation(self, values: dict[str, Any], then: str | None) -> None:
        """Thread side of both checks; a check superseded meanwhile reports nothing."""
        config, errors = workers.validate_values(values)
        devices, problem = workers.devices_of(values, config)
        if problem:
            config, errors = None, {**errors, "devices": problem}
        if not get_current_worker().is_cancelled:
            self.post_message(Validated(config, errors, then, devices))

    @work(thread=True, exclusive=True, exit_on_error=False, group="models", description="counting parameters")
    def _describe_models(self, dataset: str, image_size: str, chosen: str, extra: list[str]) -> None:
        worker = get_current_worker()
        architectures = workers.architectures(extra)
        try:
            shape = workers.data_shape(dataset, int(image_size or 0))
        except (WorkbenchError, ValueError) as error:
            reason = str(error) if isinstance(error, WorkbenchError) else "image size is not a number"
            self.post_message(ModelsDescribed(architectures, "", no_counts=reason))
            return
        channels, size, classes = shape
        self.post_message(ModelsDescribed(architectures, f"{dataset} ({channels}×{size}×{size}, {counted(classes, 'class')})",
                                          _size_note(dataset, image_size, size, chosen)))
        order = sorted(architectures, key=lambda arch: arch.name != chosen)
        for arch in order:
            if worker.is_cancelled:
                return
            self.post_message(ParamsCounted(arch.name, workers.parameter_count(arch.name, shape)))

    @on(ArchitectureList.AddFileRequested)
    def _ask_for_network_file(self) -> None:
        values = self.form_values()
        try:
            size = int(values.get("image_size") or 0)
        except (TypeError, ValueError):
            size = 0

        def added(found: tuple[workers.Architecture, int] | None) -> None:
            if found is not None:
                self.query_one(ArchitectureList).add_architecture(*found)
                self._edited()
                self.notify(f"Added {found[0].description}.", title="Network file")

        self.app.push_screen(NetworkFileScreen(str(values.get("dataset") or ""), size), added)

    # ---- worker results ---------------------------------------------------------------

    def on_models_described(self, message: ModelsDescribed) -> None:
        self.query_one(HyperparameterForm).show_note("image_size", message.size_note)
        arch_list = self.query_one(ArchitectureList)
        arch_list.shape_text, arch_list.no_counts = message.shape_text, message.no_counts
        arch_list.params = {}
        arch_list.set_architectures(message.architectures)

    def on_params_counted(self, message: ParamsCounted) -> None:
        self.query_one(ArchitectureList).set_param_count(message.arch, message.params)

    def on_validated(self, message: Validated) -> None:
        self.errors = message.errors
        self.query_one(HyperparameterForm).show_errors(message.errors)
        if message.then is None:
            return
        if message.then == "start":
            self._start_pending = False
        if message.config is None:
            field, problem = next(iter(message.errors.items()))
            first = f"{LABELS.get(field, field)}: {problem}" if field in LABELS else problem
            more = len(message.errors) - 1
            extra = f" ({more} more field{'s' if more > 1 else ''} marked)" if more else ""
            self.notify(f"Fix the form first: {first}{extra}", title="Not started", severity="error")
            return
        if message.then != "start":
            self.post_message(self.TuneRequested(message.config, message.then))
            return
        self.post_message(self.StartRequested(message.config, message.devices))
        self._remember(message.config)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group == "start" and event.state in (WorkerState.ERROR, WorkerState.CANCELLED):
            self._start_pending = False  # the app's handler says what went wrong

    @work(thread=True, exit_on_error=False, group="remember", description="saving the form")
    def _remember(self, config: RunConfig) -> None:
        problem = write_last_values(self.config_dir, config)
        if problem:
            self.app.call_from_thread(self.notify, problem, severity="warning")


def _size_note(dataset: str, image_size: str, size: int, arch: str) -> str:
    """What image size 0 trains at for this data set and network, in words ("" for a size given)."""
    from workbench.core.catalog import is_pretrained
    from workbench.core.config import DATASET_NAMES

    if str(image_size or "0").strip() not in ("0", ""):
        return ""
    if is_pretrained(arch):
        return "0: the size its ImageNet weights were trained at (224 px), resized from the data"
    if dataset in DATASET_NAMES:
        return f"0: {size}×{size} px, the data set's own size"
    return f"0: {size}×{size} px; a folder's photos are resized to {size} px unless you give a size"
