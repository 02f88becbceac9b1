"""HyperparameterForm: every declared setting that has a form widget, with each field's error beside it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, VerticalScroll
from textual.message import Message
from textual.suggester import SuggestFromList
from textual.widgets import Checkbox, Input, Label, Select, Static

from workbench.core.config import SETTINGS, RunConfig, ignored_by
from workbench.core.presets import PRESETS
from workbench.core.settings import GROUPS


class TickBox(Checkbox):
    """A checkbox that shows X when on and nothing when off, so it reads without colour too."""

    @property
    def _button(self):
        self.BUTTON_INNER = "X" if self.value else " "
        return super()._button


@dataclass(frozen=True)
class Field:
    name: str  # the RunConfig field (or "devices", how to launch it)
    label: str
    kind: str  # "input", "select", "checks" or "check" (core/settings.py WIDGETS)
    choices: tuple[str, ...] = ()  # a select's options, a checks' boxes, an input's completions
    hint: str = ""


def _fields() -> tuple[Field, ...]:
    """The declared settings that have a form, group by group; devices (a launch choice) after device."""
    fields = []
    for group in GROUPS:
        for item in SETTINGS:
            if item.form is not None and item.form.group == group:
                form = item.form
                fields.append(Field(item.name, form.label, form.widget, item.suggest or item.choices, form.hint))
                if item.name == "device":
                    fields.append(Field("devices", "devices", "input",
                                        hint="processes; 2 or more = data-parallel through torchrun"))
    return tuple(fields)


FIELDS = _fields()
LABELS = {field.name: field.label for field in FIELDS}
FIELD_NAMES = tuple(field.name for field in FIELDS)


def display(value: Any) -> str:
    """A config value as the text a user would type."""
    if isinstance(value, float):
        return repr(value)
    return str(value)


class HyperparameterForm(VerticalScroll):
    """Fields in RunConfig order; reports edits upward, shows errors it is given."""

    can_focus = False  # its fields are the tab stops; the scroll container itself would show nothing

    BINDINGS = [
        Binding("down", "app.focus_next", "Next field", show=False),
        Binding("up", "app.focus_previous", "Previous field", show=False),
    ]

    class Changed(Message):
        """A field changed; the screen re-validates."""

    class PresetChosen(Message):
        def __init__(self, name: str, values: dict[str, Any]) -> None:
            super().__init__()
            self.name = name
            self.values = values

    def on_mount(self) -> None:
        self.border_title = "hyperparameters"

    # A class, not the :focus-within pseudo-class: with :focus-within, Textual restyles every widget
    # of the form on each move between its fields (0.3 s a Tab key); a class changes only when the
    # focus enters or leaves the form.
    @on(events.DescendantFocus)
    @on(events.DescendantBlur)
    def _mark_focus_within(self) -> None:
        self.set_class(self.has_focus_within, "-focus-within")

    def compose(self) -> ComposeResult:
        with Horizontal(classes="form-row"):
            yield Label("preset", classes="field-label")
            yield Select(
                [(name, name) for name in PRESETS],
                prompt="none (choose to fill the form)",
                id="preset",
                compact=True,
            )
        for field in FIELDS:
            row_class = "form-row tall" if field.kind == "checks" else "form-row"
            with Horizontal(classes=row_class, id=f"row-{field.name}"):
                yield Label(field.label, classes="field-label")
                yield from self._control(field)
            yield Static("", classes="field-error", id=f"error-{field.name}")

    def _control(self, field: Field) -> ComposeResult:
        if field.kind == "input":
            suggester = SuggestFromList(field.choices, case_sensitive=False) if field.choices else None
            yield Input(id=field.name, placeholder=field.hint, suggester=suggester, compact=True)
        elif field.kind == "select":
            yield Select([(c, c) for c in field.choices], allow_blank=False, id=field.name, compact=True)
        elif field.kind == "checks":
            with Grid(classes="checks", id=field.name):
                for choice in field.choices:
                    yield TickBox(choice, id=f"{field.name}-{choice}", compact=True)
        else:
            yield TickBox(field.hint or "on", id=field.name, compact=True)

    # ---- values in and out -----------------------------------------------------------

    def load(self, values: dict[str, Any]) -> None:
        """Fill the fields (missing ones from RunConfig's defaults) and report one change."""
        merged = {**dataclasses.asdict(RunConfig()), "devices": 1, **values}  # devices: how to launch, not a setting
        with self.prevent(Input.Changed, Select.Changed, Checkbox.Changed):
            for field in FIELDS:
                self._set(field, merged[field.name])
            preset = self.query_one("#preset", Select)
            if merged.get("preset") in PRESETS:
                preset.value = merged["preset"]
            else:
                preset.clear()
        self.show_recipe(str(merged.get("recipe", "standard")))
        self.post_message(self.Changed())

    def show_recipe(self, recipe: str) -> None:
        """Mark the fields `recipe` does not read: disabled, with a note saying why."""
        unused = set(ignored_by(recipe))
        for field in FIELDS:
            row = self.query_one(f"#row-{field.name}")
            row.set_class(field.name in unused, "unused")
            for control in row.query("Input, Select, Checkbox"):
                control.disabled = field.name in unused
        names = ", ".join(field.label for field in FIELDS if field.name in unused)
        self._unused_note = f"not read by {recipe} (greyed out): {names}" if unused else ""
        self.show_errors(getattr(self, "_errors", {}))

    def _set(self, field: Field, value: Any) -> None:
        if field.kind == "input":
            self.query_one(f"#{field.name}", Input).value = display(value)
        elif field.kind == "select":
            if value in field.choices:
                self.query_one(f"#{field.name}", Select).value = value
        elif field.kind == "checks":
            chosen = set(value.split(",") if isinstance(value, str) else value)
            for choice in field.choices:
                self.query_one(f"#{field.name}-{choice}", Checkbox).value = choice in chosen
        else:
            self.query_one(f"#{field.name}", Checkbox).value = bool(value)

    def values(self) -> dict[str, Any]:
        """The form as loose values for RunConfig.from_mapping."""
        values: dict[str, Any] = {}
        for field in FIELDS:
            if field.kind == "input":
                values[field.name] = self.query_one(f"#{field.name}", Input).value.strip()
            elif field.kind == "select":
                values[field.name] = self.query_one(f"#{field.name}", Select).value
            elif field.kind == "checks":
                values[field.name] = tuple(
                    c for c in field.choices if self.query_one(f"#{field.name}-{c}", Checkbox).value
                )
            else:
                values[field.name] = self.query_one(f"#{field.name}", Checkbox).value
        preset = self.query_one("#preset", Select).value
        values["preset"] = preset if isinstance(preset, str) else ""
        return values

    def show_errors(self, errors: dict[str, str]) -> None:
        """Mark each field named in `errors` with its problem; a field the recipe does not
        read says so instead; clear the rest."""
        self._errors = dict(errors)
        for name in FIELD_NAMES:
            message = errors.get(name, "")
            note = self.query_one(f"#error-{name}", Static)
            said = getattr(self, "_unused_note", "") if name == "recipe" else getattr(self, "_notes", {}).get(name, "")
            if not message and said:  # no problem: what the value means, muted
                note.update(said)
                note.set_class(True, "shown")
                note.set_class(True, "muted")
            else:
                note.update(message)
                note.set_class(bool(message), "shown")
                note.set_class(False, "muted")
            self.query_one(f"#row-{name}").set_class(bool(message), "error")

    def show_note(self, name: str, text: str) -> None:
        """A muted line under a field saying what its value means here ("" clears it); an error wins."""
        self._notes = {**getattr(self, "_notes", {}), name: text}
        self.show_errors(getattr(self, "_errors", {}))

    # ---- events up -------------------------------------------------------------------

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.app.action_focus_next()

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.post_message(self.Changed())

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        event.stop()
        self.post_message(self.Changed())

    def on_select_changed(self, event: Select.Changed) -> None:
        event.stop()
        if event.select.id == "recipe" and isinstance(event.value, str):
            self.show_recipe(event.value)
        if event.select.id == "preset":
            if isinstance(event.value, str):
                _, values = PRESETS[event.value]
                # A preset is a recipe, not a place: the runs folder stays what the form says.
                runs_dir = self.query_one("#runs_dir", Input).value
                self.load({**values, "preset": event.value, "runs_dir": runs_dir})
                self.post_message(self.PresetChosen(event.value, values))
            return
        self.post_message(self.Changed())
