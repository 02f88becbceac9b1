"""A search space over declared settings, from the sweep's flags: `--lr 1e-5:1e-1` is a range
(drawn on a log scale for settings declared `log_scale`, rates and penalties), `--arch a,b` a
choice; one value is fixed for every trial.

Every end of a range and every choice is checked by its setting's own declaration before a
study is made, so a refusal names the flag and nothing is created. The space is kept in the
study as plain JSON (`to_json`), so a worker on another machine draws from the same one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from workbench.core.config import SETTINGS, RunConfig
from workbench.core.errors import WorkbenchError, flag
from workbench.core.experiments.sweep import distinct_values, split_values

DECLARED = {item.name: item for item in SETTINGS}
RANGE = ":"


@dataclass(frozen=True)
class Dimension:
    """One searched setting: a range (low, high) or a choice among values (as given)."""

    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    choices: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.choices:
            return f"{flag(self.name)} one of {', '.join(self.choices)}"
        scale = "log scale" if self.log else "linear"
        return f"{flag(self.name)} {self.low:g}..{self.high:g} ({scale})"

    def distribution(self):
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.choices:
            return CategoricalDistribution(list(self.choices))
        if self.integer:
            return IntDistribution(int(self.low), int(self.high), log=self.log)
        return FloatDistribution(float(self.low), float(self.high), log=self.log)


@dataclass(frozen=True)
class SearchSpace:
    dimensions: tuple[Dimension, ...]

    def distributions(self) -> dict[str, Any]:
        return {dimension.name: dimension.distribution() for dimension in self.dimensions}

    def describe(self) -> str:
        return "; ".join(dimension.describe() for dimension in self.dimensions) or "nothing (every trial the same)"

    def to_json(self) -> list[dict[str, Any]]:
        return [asdict(dimension) | {"choices": list(dimension.choices)} for dimension in self.dimensions]

    @classmethod
    def from_json(cls, rows: list[dict[str, Any]]) -> SearchSpace:
        return cls(tuple(Dimension(**(row | {"choices": tuple(row.get("choices") or ())})) for row in rows))

    def config(self, params: dict[str, Any], base: RunConfig) -> RunConfig:
        """The run of a trial's drawn values; a value its setting refuses raises WorkbenchError."""
        return RunConfig.from_mapping({name: str(value) for name, value in params.items()}, base)


def parse_space(given: dict[str, str], base: RunConfig) -> tuple[SearchSpace, dict[str, str]]:
    """The searched dimensions of `given` (setting -> text as typed) and the settings fixed for
    every trial; refuses a bad range or choice by its flag, before anything is made."""
    dimensions, fixed = [], {}
    for name, raw in given.items():
        text = str(raw)
        item = DECLARED[name]
        if RANGE in text and item.kind in ("int", "float") and "," not in text:
            dimensions.append(_range(name, text, base))
            continue
        values = split_values(name, text)
        if len(dict.fromkeys(values)) > 1 and not item.sweep:
            raise WorkbenchError(f"{flag(name)} takes one value in a search; give one")
        kept, _ = distinct_values(name, values, base)
        if len(kept) > 1:
            dimensions.append(Dimension(name, choices=tuple(kept)))
        else:
            fixed[name] = kept[0]
    return SearchSpace(tuple(dimensions)), fixed


def _range(name: str, text: str, base: RunConfig) -> Dimension:
    item = DECLARED[name]
    parts = text.split(RANGE)
    if len(parts) != 2 or not all(part.strip() for part in parts):
        raise WorkbenchError(f"{flag(name)} {text!r}: a range is LOW:HIGH, e.g. {flag(name)} "
                             f"{'1e-5:1e-1' if item.log_scale else '1:8'}")
    ends = []
    for part in parts:
        try:
            ends.append(getattr(RunConfig.from_mapping({name: part.strip()}, base), name))
        except WorkbenchError as error:
            raise WorkbenchError(f"the range {flag(name)} {text} refused ({error}); no study was made") from None
    low, high = ends
    if not low < high:
        raise WorkbenchError(f"the range {flag(name)} {text} needs its low end below its high end")
    if item.log_scale and low <= 0:
        raise WorkbenchError(f"the range {flag(name)} {text} is drawn on a log scale; start it above 0 "
                             f"(e.g. {flag(name)} 1e-6:{high:g})")
    return Dimension(name, low, high, log=item.log_scale, integer=item.kind == "int")
