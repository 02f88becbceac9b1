"""One declaration per training setting, without a UI: type, default, bounds or choices, help
with its unit, the recipes that read it, whether a resume may change it, and how the form shows it.

RunConfig's fields carry a `Setting` in their metadata (see `setting`); the flags, TOML, the form,
sweeps, queued jobs and compare loop over `declarations(RunConfig)` instead of naming settings again.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any

from workbench.core.errors import ConfigError
from workbench.core.errors import flag as flag_of

KINDS = ("int", "float", "str", "bool", "list")
WIDGETS = ("input", "select", "checks", "check")  # checks: a tick box per choice; check: one tick box


@dataclass(frozen=True)
class Form:
    """How the setup form shows a setting."""

    widget: str  # one of WIDGETS
    label: str
    hint: str = ""  # an input's placeholder, or the words beside a check
    group: str = "training"  # rows are laid out group by group (see GROUPS), in declaration order within one


GROUPS = ("run", "training", "data", "stopping", "machine")


@dataclass(frozen=True)
class Setting:
    """One setting of RunConfig; `name`, `kind` and `default` come from its dataclass field."""

    help: str  # what it means, with its unit: the flag's help
    low: float | None = None  # bounds of a number, inclusive unless `open_low`/`open_high`
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    zero_is: str = ""  # what 0 means when it lies outside the bounds ("off", "the data set's own size")
    choices: tuple[str, ...] = ()  # the allowed values (of each item, for a list)
    suggest: tuple[str, ...] = ()  # common values of an open setting (a form input's completions)
    recipes: tuple[str, ...] | None = None  # the recipes that read it; None = every recipe
    resume: str = ""  # why a resume may change it; "" = a resume must keep the checkpoint's value
    form: Form | None = None  # None: not on the form
    flag: bool = True  # a train flag is made for it (False: a hand-made one sets it, as --preset does)
    metavar: str | None = None
    default_text: str = ""  # the default in words, for the flag's help
    sweep: bool = True  # a sweep may give it a list of values
    compared: bool = True  # compare's "same for all" line shows it
    log_scale: bool = False  # a search range over it is drawn on a log scale (rates, penalties)
    name: str = ""
    kind: str = ""  # one of KINDS
    default: Any = None

    @property
    def option(self) -> str:
        return flag_of(self.name)

    @property
    def resumable(self) -> bool:
        return bool(self.resume)

    def reads(self, recipe: str) -> bool:
        return self.recipes is None or recipe in self.recipes

    def normal_form(self, value: Any) -> Any:
        """A checked value as compared for sameness: 0.1, 0.10 and 1e-1 are one float already; a
        list is a set of choices (augment applies its ops in its own order), so its order is not."""
        return tuple(sorted(value)) if self.kind == "list" else value

    def flag_help(self) -> str:
        zero = f"; 0 = {self.zero_is}" if self.zero_is and self.zero_is not in self.help else ""
        return f"{self.help}{zero} (default: {self.default_words()})"

    def default_words(self) -> str:
        return self.default_text or self.words(self.default)

    def words(self, value: Any) -> str:
        """A value as a flag would be given it: crop,flip (none), on/off, 0.1."""
        if self.kind == "list":
            return ",".join(value) or "none"
        if self.kind == "bool":
            return "on" if value else "off"
        return str(value)

    # ---- loose values in, checked values out ---------------------------------------------

    def coerce(self, raw: Any) -> Any:
        """A string (form, flag) or TOML value as this setting's type, or ConfigError saying why not."""
        try:
            return _COERCE[self.kind](raw)
        except (TypeError, ValueError, OverflowError):
            expected = {"int": "a whole number", "float": "a number", "bool": "true or false", "str": "text (quoted in TOML)"}
            raise ConfigError(self.name, f"{raw!r} is not {expected.get(self.kind, 'valid')}") from None
        except _NotFinite:
            raise ConfigError(self.name, f"{raw!r} is not a finite number") from None

    def check(self, value: Any) -> None:
        """Raise ConfigError when `value` is outside the declared bounds or choices."""
        if self.choices:
            for item in value if self.kind == "list" else (value,):
                if item not in self.choices:
                    raise ConfigError(self.name, f"{item!r} is not one of {', '.join(self.choices)}")
        if self.kind not in ("int", "float") or (self.zero_is and value == 0):
            return
        above = self.low is None or (value > self.low if self.open_low else value >= self.low)
        below = self.high is None or (value < self.high if self.open_high else value <= self.high)
        if above and below:
            return
        if not above and self.low == 0 and self.open_low:
            raise ConfigError(self.name, f"{value} must be greater than 0")
        raise ConfigError(self.name, f"{value} is outside {self.range_text()}")

    def range_text(self) -> str:
        if self.kind == "int":
            text = f"{_int(self.low)}..{_int(self.high)}"
        else:
            left, right = "(" if self.open_low else "[", ")" if self.open_high else "]"
            text = f"{left}{self.low:g}, {self.high:g}{right}"
        return f"{text} (0 = {self.zero_is})" if self.zero_is else text


def setting(default: Any, help: str, **declaration: Any) -> Any:
    """A RunConfig field declared once: its default and its `Setting`."""
    return dataclasses.field(default=default, metadata={"setting": Setting(help, **declaration)})


def declarations(config_class: type) -> tuple[Setting, ...]:
    """Every field's Setting, in declaration order, with its name, kind and default filled in."""
    found = []
    for field in dataclasses.fields(config_class):
        kind = "list" if str(field.type).startswith("tuple") else str(field.type)
        if kind not in KINDS or "setting" not in field.metadata:
            raise TypeError(f"RunConfig.{field.name} needs a setting(...) declaration of a known type")
        found.append(dataclasses.replace(field.metadata["setting"], name=field.name, kind=kind, default=field.default))
    return tuple(found)


# ---- coercion ---------------------------------------------------------------------------------


class _NotFinite(Exception):
    pass


def _to_list(raw: Any) -> tuple[str, ...]:
    items = raw.split(",") if isinstance(raw, str) else list(raw)
    items = [str(item).strip().lower() for item in items if str(item).strip()]
    return () if items in ([], ["none"]) else tuple(dict.fromkeys(items))


def _to_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError


def _to_int(raw: Any) -> int:
    if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
        raise ValueError
    return int(str(raw).strip()) if isinstance(raw, str) else int(raw)


def _to_float(raw: Any) -> float:
    if isinstance(raw, bool):
        raise ValueError
    number = float(raw)
    if not math.isfinite(number):
        raise _NotFinite
    return number


def _to_str(raw: Any) -> str:
    if isinstance(raw, os.PathLike):
        raw = os.fspath(raw)
    if not isinstance(raw, str):  # a TOML list, boolean, number or date is no name or path (runs_dir = 7)
        raise TypeError(raw)
    return raw.strip()


_COERCE = {"list": _to_list, "bool": _to_bool, "int": _to_int, "float": _to_float, "str": _to_str}


def _int(bound: float | None) -> str:
    return "2**63-1" if bound == 2**63 - 1 else f"{int(bound or 0):,}"
