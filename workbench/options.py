"""Training flags <-> RunConfig: the one set of train options shared by the app, `train` and `bench`.

One flag per declared setting (core/settings.py), made by a loop: a new setting needs no edit here.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from workbench.core.config import SETTING_BY_NAME, SETTINGS, RunConfig
from workbench.core.errors import WorkbenchError

ARG_TYPES = {"int": int, "float": float}  # argparse refuses "x" for these at once; the rest is RunConfig's


def add_train_options(parser: argparse.ArgumentParser) -> None:
    """Every RunConfig setting as a flag; None means 'not given', so config files still apply."""
    group = parser.add_argument_group("training options (flags override --config)")
    add = group.add_argument
    add("--config", metavar="TOML", help="read settings from a TOML file (same keys as the flags)")
    add("--preset", metavar="NAME", help="start from a named recipe (see `workbench models`)")
    for item in SETTINGS:
        if not item.flag:
            continue
        text = item.flag_help().replace("%", "%%")  # argparse formats help with %
        if item.kind == "bool":
            add(item.option, action=argparse.BooleanOptionalAction, default=None, help=text)
            continue
        add(item.option, type=ARG_TYPES.get(item.kind), choices=item.choices if item.kind == "str" and item.choices
            else None, metavar=item.metavar, help=text)


def add_setting_option(parser: argparse.ArgumentParser, name: str, help: str | None = None) -> None:
    """One declared setting as a flag of another command (runs, compare, models, ...), with the
    declaration's type, choices and default, so no command spells them again. `help` replaces the
    declaration's words where the command uses the setting in its own way; the default is said."""
    item = SETTING_BY_NAME[name]
    text = f"{help} (default: {item.default_words()})" if help else item.flag_help()
    parser.add_argument(item.option, type=ARG_TYPES.get(item.kind), default=item.default, metavar=item.metavar,
                        choices=item.choices if item.kind == "str" and item.choices else None,
                        help=text.replace("%", "%%"))


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """Defaults, then a preset, then --config, then flags."""
    from workbench.core.presets import PRESETS, preset_config

    base = RunConfig()
    if getattr(args, "preset", None):
        base = preset_config(args.preset)
    if getattr(args, "config", None):
        base = RunConfig.from_toml(Path(args.config), base)
        if base.preset and base.preset not in PRESETS:  # a label naming no preset misleads
            raise WorkbenchError(f"{args.config}: preset {base.preset!r} is no preset (choose one of "
                                 f"{', '.join(PRESETS)}, with --preset); a config file's preset is only a label")
    flags = {item.name: getattr(args, item.name) for item in SETTINGS if getattr(args, item.name, None) is not None}
    return RunConfig.from_mapping(flags, base)
