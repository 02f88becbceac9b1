"""Sweeps: comma lists on train flags become a grid (or seeded random picks from it) of checked jobs.

Every value of every list is checked on its own, then every point as a whole, before the caller
queues anything: a bad value is refused by name and nothing is queued.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Callable

from workbench.core.config import SETTINGS, RunConfig
from workbench.core.errors import WorkbenchError, flag

LIST_ALTERNATIVES = "/"  # a list setting (--augment) is itself a comma list: its alternatives are split on "/"
DECLARED = {item.name: item for item in SETTINGS}


@dataclass(frozen=True)
class SweepPoint:
    values: dict[str, str]  # the swept settings of this point, as given
    args: tuple[str, ...]  # its train flags
    config: RunConfig


@dataclass(frozen=True)
class Sweep:
    swept: tuple[str, ...]  # settings with more than one value
    points: tuple[SweepPoint, ...]


def split_values(field: str, raw: str) -> list[str]:
    separator = LIST_ALTERNATIVES if field in DECLARED and DECLARED[field].kind == "list" else ","
    values = [value.strip() for value in str(raw).split(separator)]
    if any(not value for value in values):
        raise WorkbenchError(f"{flag(field)} {raw!r} has an empty value in its list")
    return list(dict.fromkeys(values))


def expand(given: dict[str, str], base: RunConfig, fixed_args: list[str], *, random_picks: int = 0,
           seed: int = 0, check: Callable[[RunConfig], str] | None = None) -> Sweep:
    """The grid of `given` (setting -> comma list) over `base`; `random_picks` > 0 keeps that many
    distinct points chosen by `seed`. `fixed_args` (e.g. --preset, --config) go into every job.
    `check` returns why a whole point cannot train ("" when it can), e.g. a network too deep for the image size."""
    lists = {field: split_values(field, raw) for field, raw in given.items()}
    for field, values in lists.items():
        if field in DECLARED and not DECLARED[field].sweep and len(values) > 1:
            raise WorkbenchError(f"{flag(field)} takes one value in a sweep; give one")
        for value in values:  # each value alone, so the refusal names the value, not a point
            try:
                RunConfig.from_mapping({field: value}, base)
            except WorkbenchError as error:
                raise WorkbenchError(f"sweep value {value!r} of {flag(field)} refused ({error}); nothing was queued") from None
    fields = list(lists)
    grid = list(itertools.product(*(lists[field] for field in fields)))
    if random_picks:
        if random_picks > len(grid):
            raise WorkbenchError(f"--sweep-random {random_picks} asks for more points than the grid's {len(grid)}")
        chosen = sorted(random.Random(seed).sample(range(len(grid)), random_picks))
        grid = [grid[index] for index in chosen]
    points = []
    for combination in grid:
        values = dict(zip(fields, combination))
        try:
            config = RunConfig.from_mapping(values, base)
            problem = check(config) if check is not None else ""
            if problem:
                raise WorkbenchError(problem)
        except WorkbenchError as error:
            shown = ", ".join(f"{flag(f)} {v}" for f, v in values.items() if len(lists[f]) > 1) or "of the sweep"
            raise WorkbenchError(f"the point {shown} is refused ({error}); nothing was queued") from None
        args = list(fixed_args)
        for field, value in values.items():
            args += [flag(field), value]
        points.append(SweepPoint(values, tuple(args), config))
    swept = tuple(field for field in fields if len(lists[field]) > 1)
    return Sweep(swept, tuple(points))
