"""Where the app keeps the form's last values (last.toml), read and written without a UI."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from workbench.core.atomic import write_text_atomic
from workbench.core.config import SETTINGS, RunConfig
from workbench.core.errors import WorkbenchError

LAST_VALUES_FILE = "last.toml"
NOT_REMEMBERED = ("runs_dir", "data_dir")  # where things go is given per launch, never carried over


def default_config_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_config_dir("workbench"))


def read_last_values(config_dir: Path) -> dict[str, Any]:
    """The settings saved when training last started; {} when missing or unreadable.

    Values are not validated here: the form shows any that became invalid (a deleted folder,
    say) with its reason, like a value the user typed.
    """
    try:
        data = tomllib.loads((config_dir / LAST_VALUES_FILE).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return {}
    known = {item.name for item in SETTINGS} - set(NOT_REMEMBERED)
    return {key: value for key, value in data.items() if key in known}


def write_last_values(config_dir: Path, config: RunConfig) -> str | None:
    """Save the config for next time; returns a sentence when it could not be saved."""
    try:
        config_dir.mkdir(parents=True, exist_ok=True)
        remembered = config.replace(**{key: getattr(RunConfig(), key) for key in NOT_REMEMBERED})
        write_text_atomic(config_dir / LAST_VALUES_FILE, remembered.to_toml())
    except (OSError, WorkbenchError) as error:
        return f"could not remember these settings in {config_dir}: {getattr(error, 'strerror', None) or error}"
    return None


def config_values(config: RunConfig) -> dict[str, Any]:
    """Every declared setting's value, for the form's `load`."""
    return {item.name: getattr(config, item.name) for item in SETTINGS}
