"""RunConfig: defaults, coercion of loose values, validation messages, TOML round trip."""

import pytest

from workbench.core.config import RunConfig
from workbench.core.errors import WorkbenchError


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
