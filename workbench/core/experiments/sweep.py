"""Sweeps: comma lists on train flags become a grid (or seeded random picks from it) of checked jobs.

Every value of every list is checked on its own, then every point as a whole, before the caller
queues anything: a bad value is refused by name and nothing is queued. A value that its setting's
declaration reads as one given before (0.1, 0.10 and 1e-1; crop,flip and flip,crop) is dropped,
the first spelling kept, so no two points train the same run. Random picks decode distinct indices
of the grid, never the grid itself: a grid of 10^8 points costs what the picks cost.
"""

from __future__ import annotations

import math
import random
import sys
from dataclasses import dataclass
from typing import Callable, Iterable

from workbench.core.config import SETTINGS, RunConfig
from workbench.core.errors import WorkbenchError, flag
from workbench.core.wording import count as counted

LIST_ALTERNATIVES = "/"  # a list setting (--augment) is itself a comma list: its alternatives are split on "/"
DECLARED = {item.name: item for item in SETTINGS}
MAX_POINTS = 10_000  # jobs one sweep queues at most (each is a training run): beyond, pick with --sweep-random


@dataclass(frozen=True)
class SweepPoint:
    values: dict[str, str]  # the swept settings of this point, as given
    args: tuple[str, ...]  # its train flags
    config: RunConfig


@dataclass(frozen=True)
class Duplicate:
    """A value dropped from a list: its setting reads it as the one given before it."""

    field: str
    value: str
    kept: str  # the first spelling, which stays


@dataclass(frozen=True)
class Sweep:
    swept: tuple[str, ...]  # settings with more than one distinct value
    points: tuple[SweepPoint, ...]
    grid_size: int = 1  # distinct points in the grid (the product of each list's distinct values)
    duplicates: tuple[Duplicate, ...] = ()
    dropped_points: int = 0  # points the duplicates would have added to the grid

    def duplicates_line(self) -> str:
        """One line saying what was dropped as a duplicate ("" when nothing was)."""
        if not self.duplicates:
            return ""
        groups: dict[tuple[str, str], list[str]] = {}
        for duplicate in self.duplicates:
            groups.setdefault((duplicate.field, duplicate.kept), []).append(duplicate.value)
        said = "; ".join(f"{flag(field)} {', '.join(values)} ({'repeated' if values == [kept] else f'the same as {kept}'})"
                         for (field, kept), values in groups.items())
        return f"dropped {counted(self.dropped_points, 'duplicate point')}: {said}"


def split_values(field: str, raw: str) -> list[str]:
    """Every value of a list, as given (repeats included: they are dropped, and counted, later)."""
    separator = LIST_ALTERNATIVES if field in DECLARED and DECLARED[field].kind == "list" else ","
    values = [value.strip() for value in str(raw).split(separator)]
    if any(not value for value in values):
        raise WorkbenchError(f"{flag(field)} {raw!r} has an empty value in its list")
    return values


def distinct_values(field: str, values: list[str], base: RunConfig) -> tuple[list[str], list[Duplicate]]:
    """The values of one list that differ once read by the setting's declaration (first spelling
    kept), and the duplicates dropped. Each value is checked alone, so a refusal names it."""
    kept: dict[object, str] = {}  # normal form -> first spelling
    duplicates = []
    for value in values:
        try:
            config = RunConfig.from_mapping({field: value}, base).absolute()  # ./data and data are one folder
        except WorkbenchError as error:
            hint = ("; a range LOW:HIGH is searched with --search tpe"
                    if ":" in value and DECLARED[field].kind in ("int", "float") else "")
            raise WorkbenchError(f"sweep value {value!r} of {flag(field)} refused ({error}){hint}; "
                                 "nothing was queued") from None
        key = DECLARED[field].normal_form(getattr(config, field))
        if key in kept:
            duplicates.append(Duplicate(field, value, kept[key]))
        else:
            kept[key] = value
    return list(kept.values()), duplicates


def expand(given: dict[str, str], base: RunConfig, fixed_args: list[str], *, random_picks: int = 0,
           seed: int = 0, check: Callable[[RunConfig], str] | None = None) -> Sweep:
    """The grid of `given` (setting -> comma list) over `base`; `random_picks` > 0 keeps that many
    distinct points chosen by `seed`. `fixed_args` (e.g. --preset, --config) go into every job.
    `check` returns why a whole point cannot train ("" when it can), e.g. a network too deep for the image size."""
    lists: dict[str, list[str]] = {}
    duplicates: list[Duplicate] = []
    given_size = 1
    for field, raw in given.items():
        values = split_values(field, raw)
        if field in DECLARED and not DECLARED[field].sweep and len(dict.fromkeys(values)) > 1:
            raise WorkbenchError(f"{flag(field)} takes one value in a sweep; give one")
        lists[field], dropped = distinct_values(field, values, base)
        duplicates += dropped
        given_size *= len(values)
    fields = list(lists)
    recipes = sorted(set(lists.get("recipe", [base.recipe])))
    for field in fields:  # values no recipe of the sweep reads would train one run several times
        if len(lists[field]) > 1 and field in DECLARED and not any(DECLARED[field].reads(r) for r in recipes):
            raise WorkbenchError(f"{flag(field)} is not read by the {' or '.join(recipes)} recipe: its "
                                 f"{len(lists[field])} values would train the same run; nothing was queued")
    sizes = [len(lists[field]) for field in fields]
    total = math.prod(sizes)
    if random_picks:
        if random_picks > total:
            raise WorkbenchError(f"--sweep-random {random_picks} asks for more points than the grid's {total:,} "
                                 "distinct points" + (" (duplicates dropped)" if duplicates else ""))
        if random_picks > MAX_POINTS:
            raise WorkbenchError(f"--sweep-random {random_picks} is more than the {MAX_POINTS:,} jobs a sweep queues at once")
        indices: Iterable[int] = sorted(_distinct_indices(total, random_picks, seed))
    elif total > MAX_POINTS:
        raise WorkbenchError(f"the grid has {total:,} points, more than the {MAX_POINTS:,} jobs a sweep queues at "
                             "once; pick some with --sweep-random N")
    else:
        indices = range(total)
    points = []
    for index in indices:
        values = {field: lists[field][digit] for field, digit in zip(fields, _digits(index, sizes))}
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
    return Sweep(swept, tuple(points), total, tuple(duplicates), given_size - total)


def _digits(index: int, sizes: list[int]) -> list[int]:
    """The grid point at `index`, as one index per list: mixed-radix digits, the last list
    fastest, so index i is itertools.product's i-th point."""
    digits = []
    for size in reversed(sizes):
        index, digit = divmod(index, size)
        digits.append(digit)
    return digits[::-1]


def _distinct_indices(total: int, picks: int, seed: int) -> list[int]:
    """`picks` distinct indices below `total`, by `seed`; range() is lazy, so nothing grid-sized is made."""
    rng = random.Random(seed)
    if total <= sys.maxsize:
        return rng.sample(range(total), picks)
    chosen: set[int] = set()  # too large for sample() to take the length of; picks <= MAX_POINTS makes repeats rare
    while len(chosen) < picks:
        chosen.add(rng.randrange(total))
    return list(chosen)


def fits_checker() -> Callable[[RunConfig], str]:
    """A check of why a point's network cannot take its images ("" when it can), known before
    any job runs; asked once per (data set, image size, architecture) of the sweep, not per point."""
    from workbench.core.data.load import dataset_shape
    from workbench.core.models import input_problem

    said: dict[tuple[str, int, str], str] = {}

    def fits(config: RunConfig) -> str:
        from workbench.core.training.start import check_start

        try:  # where the point's weights start: a file or a run that is not there, two starting points
            check_start(config)
        except WorkbenchError as error:
            return str(error)
        key = (config.dataset, config.image_size, config.arch)
        if key not in said:
            try:
                channels, size, classes = dataset_shape(config.dataset, config.image_size)
            except WorkbenchError:
                said[key] = ""  # a folder that is not there yet: its job will say so
            else:
                problem = input_problem(config.arch, channels, classes, size)
                said[key] = f"{config.arch} at {size}x{size} px: {problem}" if problem else ""
        return said[key]

    return fits
