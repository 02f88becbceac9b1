"""Every declared setting round-trips through flags, TOML and the form, with a value other than
its default. Nothing here names a setting: a new declaration is tested by being declared."""

import argparse
import asyncio
import math

import pytest

from tests.support.cli import one_line_error
from workbench.core.config import SETTINGS, RunConfig
from workbench.core.errors import WorkbenchError
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


# A command whose flag means a setting in its own way, and why; any other flag named after a
# setting must take the declaration's default (before `models` defaulted to cifar10, the app to shapes).
OWN_DEFAULTS = {
    ("predict", "--device"): "a few images need no GPU",
    ("bench", "--epochs"): "a benchmark times one epoch of each loop",
    ("bench", "--augment"): "the plain loop it is measured against has none",
    ("reproduce", "--dataset"): "the seed table is CIFAR-10's",
    ("reproduce", "--epochs"): "the seed recipe's",
}


def test_other_commands_flags_named_after_a_setting_take_its_declared_default():
    from workbench.cli import build_command_parser
    from workbench.command_table import COMMANDS

    by_option = {item.option: item for item in SETTINGS}
    drift = []
    for command in COMMANDS:
        for action in build_command_parser(command.name)._actions:
            item = next((by_option[o] for o in action.option_strings if o in by_option), None)
            if item is None or action.default is None or (command.name, item.option) in OWN_DEFAULTS:
                continue  # None: a train option, which the config layers fill in
            if action.default != item.default:
                drift.append((command.name, item.option, action.default, item.default))
    assert not drift


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


@pytest.mark.parametrize("value", ["inf", "-inf", "nan"])
def test_non_finite_numbers_are_refused_in_flags_and_toml(value, tmp_path, capsys):
    assert "finite" in one_line_error(capsys, ["train", f"--lr={value}"])
    toml = tmp_path / "run.toml"
    toml.write_text(f"momentum = {value}\n")
    assert "finite" in one_line_error(capsys, ["train", "--config", str(toml)])


@pytest.mark.parametrize("flags", [["--seed", str(2**64)], ["--epochs", str(10**23)], ["--dataset", ""]])
def test_numbers_out_of_bounds_and_an_empty_data_set_get_one_line(flags, capsys):
    one_line_error(capsys, ["train", "--device", "cpu", *flags])


def test_defaults_are_valid_and_offline():
    config = RunConfig()
    config.validate()
    assert config.dataset == "shapes"  # the default never needs a download


def test_strings_from_a_form_are_coerced():
    config = RunConfig.from_mapping({"epochs": "3", "lr": "0.01", "augment": "crop, flip", "compile": "yes"})
    assert config.epochs == 3 and config.lr == 0.01
    assert config.augment == ("crop", "flip") and config.compile is True
    assert RunConfig.from_mapping({"augment": "none"}).augment == ()


@pytest.mark.parametrize(
    "values, flag",
    [
        ({"arch": "nope"}, "--arch"),
        ({"dataset": "imagenet"}, "--dataset"),
        ({"optimizer": "rmsprop"}, "--optimizer"),
        ({"lr": 0}, "--lr"),
        ({"lr": -1}, "--lr"),
        ({"epochs": 0}, "--epochs"),
        ({"batch_size": -5}, "--batch-size"),
        ({"epochs": "two"}, "--epochs"),
        ({"augment": "crop,zoom"}, "--augment"),
        ({"schedule": "linear"}, "--schedule"),
        ({"momentum": 1.5}, "--momentum"),
        ({"dataset": "/no/such/folder"}, "--dataset"),
    ],
)
def test_bad_values_name_the_flag(values, flag):
    with pytest.raises(WorkbenchError) as error:
        RunConfig.from_mapping(values)
    message = str(error.value)
    assert message.startswith(flag) and "\n" not in message


def test_unknown_key_lists_known_ones():
    with pytest.raises(WorkbenchError, match="unknown setting 'learning_rate'.*lr"):
        RunConfig.from_mapping({"learning_rate": 0.1})


def test_toml_round_trip(tmp_path):
    config = RunConfig.from_mapping({"arch": "convbn", "augment": "crop,cutout", "lr": 0.05})
    path = tmp_path / "run.toml"
    path.write_text(config.to_toml())
    assert RunConfig.from_toml(path) == config


def test_toml_accepts_dashed_keys_and_rejects_unknown(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text('batch-size = 32\noptimizer = "nesterov"\n')
    assert RunConfig.from_toml(good).batch_size == 32
    bad = tmp_path / "bad.toml"
    bad.write_text("colour = 3\n")
    with pytest.raises(WorkbenchError, match="unknown setting 'colour'"):
        RunConfig.from_toml(bad)
    twice = tmp_path / "twice.toml"
    twice.write_text("clip_grad_norm = 1\nclip-grad-norm = 2\n")
    with pytest.raises(WorkbenchError, match=r"sets clip_grad_norm twice \(clip_grad_norm and clip-grad-norm\)"):
        RunConfig.from_toml(twice)
    twice.write_text("clip-grad-norm = 1\nclip_grad_norm = 2\n")
    with pytest.raises(WorkbenchError, match=r"sets clip_grad_norm twice \(clip-grad-norm and clip_grad_norm\)"):
        RunConfig.from_toml(twice)


def test_a_resume_takes_a_list_setting_in_any_order_and_refuses_a_changed_one():
    from workbench.core.config import changed_on_resume

    saved = RunConfig.from_mapping({"augment": "crop,flip"}).to_dict()
    assert changed_on_resume(saved, RunConfig.from_mapping({"augment": "flip,crop"})) == []
    assert [name for name, _, _ in changed_on_resume(saved, RunConfig.from_mapping({"augment": "flip", "seed": 1}))] \
        == ["augment", "seed"]


def test_a_config_files_preset_label_must_name_a_preset(tmp_path, capsys):
    path = tmp_path / "run.toml"
    path.write_text('preset = "bogus"\n')
    assert "preset 'bogus' is no preset" in one_line_error(capsys, ["train", "--config", str(path)])
    path.write_text('preset = "shapes-quick"\nepochs = 1\n')  # a run's own config.toml names its preset
    assert from_flags(["--config", str(path)]).preset == "shapes-quick"


@pytest.mark.parametrize("line", ['runs_dir = ["a", "b"]', "data_dir = true", "runs_dir = 7", "dataset = 1979-05-27",
                                  "arch = 3.5"])
def test_a_text_setting_in_toml_takes_only_text(tmp_path, line):
    path = tmp_path / "run.toml"
    path.write_text(line + "\n")
    with pytest.raises(WorkbenchError, match="is not text"):
        RunConfig.from_toml(path)
    assert RunConfig.from_mapping({"runs_dir": tmp_path / "runs"}).runs_dir == str(tmp_path / "runs")  # a Path is text


def test_a_past_run_still_reads_after_its_data_folder_is_gone(tmp_path):
    from workbench.core import runs

    folder = tmp_path / "my-photos"
    folder.mkdir()
    config = RunConfig(dataset=str(folder), arch="convbn", runs_dir=str(tmp_path / "runs"))
    run_dir = runs.create_run_dir(config)
    folder.rmdir()
    with pytest.raises(WorkbenchError, match="does not exist"):
        RunConfig.from_toml(run_dir / "config.toml")  # starting a new run from it: refused
    summary = runs.summarize_run(run_dir)  # listing the record: fine
    assert (summary.arch, summary.dataset) == ("convbn", str(folder))


@pytest.mark.parametrize("name", ['quote"d', "back\\slash", "tab\tand\x01control", "new\nline", "ünï ☃"])
def test_a_runs_folder_with_odd_characters_reads_back_equal(tmp_path, name):
    from workbench.core import runs

    config = RunConfig(runs_dir=str(tmp_path / name), arch="linear")
    run_dir = runs.create_run_dir(config)
    assert runs.read_config(run_dir, for_resume=True) == config


@pytest.mark.parametrize(
    "line, flag",
    [
        ("image_size = 10000000", "--image-size"),
        ("batch_size = 1e12", "--batch-size"),
        ("epochs = 1e9", "--epochs"),
        ("lr = 1e300", "--lr"),
        ("early_stop = -1", "--early-stop"),
        ("keep_best = 1000", "--keep-best"),
        ("stream_over_mb = 1e30", "--stream-over-mb"),
        ("seed = -3", "--seed"),
    ],
)
def test_numbers_in_a_config_file_are_bounded_like_flags(tmp_path, line, flag):
    path = tmp_path / "config.toml"
    path.write_text(line + "\n")
    with pytest.raises(WorkbenchError) as error:
        RunConfig.from_toml(path)
    message = str(error.value)
    assert message.startswith(flag) and str(path) in message and "\n" not in message
