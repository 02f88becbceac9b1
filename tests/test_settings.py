"""Every declared setting round-trips through flags, TOML and the form, with a value other than
its default. Nothing here names a setting: a new declaration is tested by being declared."""

import argparse
import asyncio
import math

import pytest

from workbench.core.config import SETTINGS, RunConfig
from workbench.core.settings import WIDGETS, Setting


def other_value(item: Setting, folder) -> object:
    """A valid value that is not the default, chosen from the declaration alone."""
    if item.kind == "bool":
        return not item.default
    if item.kind == "list":
        return (item.choices[-1],) if tuple(item.default) != (item.choices[-1],) else (item.choices[0],)
    if item.kind == "str":
        offered = item.choices or item.suggest
        if offered:
            return next(value for value in offered if value != item.default)
        return str(folder / f"{item.name}-elsewhere")  # an open text setting: a folder name
    if item.kind == "int":
        value = int(item.low) + 1
        return value + 1 if value == item.default else value
    value = item.low + min(1.0, (item.high - item.low) / 4)
    return value / 2 if value == item.default else value


def every_setting_changed(folder) -> dict:
    return {item.name: other_value(item, folder) for item in SETTINGS}


def as_flags(values: dict) -> list[str]:
    flags = []
    for item in SETTINGS:
        if item.name not in values or not item.flag:
            continue
        value = values[item.name]
        if item.kind == "bool":
            flags.append(item.option if value else "--no-" + item.option[2:])
        else:
            flags += [item.option, ",".join(value) if item.kind == "list" else str(value)]
    return flags


def from_flags(flags: list[str]) -> RunConfig:
    from workbench.options import add_train_options, config_from_args

    parser = argparse.ArgumentParser()
    add_train_options(parser)
    return config_from_args(parser.parse_args(flags))


def test_every_setting_is_declared_completely():
    for item in SETTINGS:
        assert item.help and item.kind and item.name, item
        if item.kind in ("int", "float"):  # a number read from a file is bounded like a flag
            assert item.low is not None and item.high is not None and math.isfinite(item.high), item.name
            item.check(item.default)
        if item.form is not None:
            assert item.form.widget in WIDGETS and item.form.label, item.name
            assert (item.form.widget == "check") == (item.kind == "bool"), item.name
            assert (item.form.widget == "checks") == (item.kind == "list"), item.name


@pytest.mark.parametrize("item", SETTINGS, ids=[item.name for item in SETTINGS])
def test_each_setting_round_trips_alone(item, tmp_path):
    value = other_value(item, tmp_path)
    assert value != item.default
    config = RunConfig.from_mapping({item.name: value})
    assert getattr(config, item.name) == value
    path = tmp_path / "config.toml"
    path.write_text(config.to_toml(), encoding="utf-8")
    assert RunConfig.from_toml(path) == config
    if item.flag:
        assert from_flags(as_flags({item.name: value})) == config


def test_every_setting_changed_at_once_round_trips_through_flags_and_toml(tmp_path):
    values = every_setting_changed(tmp_path)
    config = RunConfig.from_mapping(values)
    assert all(getattr(config, name) != getattr(RunConfig(), name) for name in values)
    path = tmp_path / "config.toml"
    path.write_text(config.to_toml(), encoding="utf-8")
    assert RunConfig.from_toml(path) == config
    by_flags = from_flags(as_flags(values))
    unflagged = [item.name for item in SETTINGS if not item.flag]
    assert by_flags == config.replace(**{name: getattr(RunConfig(), name) for name in unflagged})


def test_every_setting_on_the_form_round_trips_through_its_widget(tmp_path):
    from textual.app import App

    from workbench.ui.settings import config_values
    from workbench.ui.widgets.form import FIELD_NAMES, HyperparameterForm

    config = RunConfig.from_mapping(every_setting_changed(tmp_path))
    shown = [item.name for item in SETTINGS if item.form is not None]
    assert set(shown) <= set(FIELD_NAMES)

    class FormApp(App):
        def compose(self):
            yield HyperparameterForm(id="form")

    async def read_back() -> dict:
        app = FormApp()
        async with app.run_test(size=(120, 80)) as pilot:
            form = app.query_one(HyperparameterForm)
            form.load(config_values(config))
            await pilot.pause()
            return form.values()

    values = asyncio.run(read_back())
    values.pop("devices")
    assert set(shown) <= set(values)
    again = RunConfig.from_mapping(values, base=config)
    assert {name: getattr(again, name) for name in shown} == {name: getattr(config, name) for name in shown}
    assert set(values) <= {item.name for item in SETTINGS}  # the form reads back settings only
