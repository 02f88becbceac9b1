"""The setup screen: the form, its keys and focus, filtering the architectures, checkboxes, the palette."""

from __future__ import annotations

from pathlib import Path

from textual.widgets._footer import FooterKey

from tests.support.ui import (
    SIZE,
    app_for,
    asynchronous,
    make_app,
    models_ready,
    paste_into,
    record_notifications,
    run_folders,
    tiny_config,
    type_into,
    wait_until,
)
from workbench.ui.screens.queue import QueueScreen
from workbench.ui.screens.runs import RunsScreen
from workbench.ui.screens.setup import SetupScreen
from workbench.ui.widgets.footer import FittedFooter


@asynchronous
async def test_invalid_value_blocks_start_with_a_message(tmp_path, data_dir):
    app = make_app(tmp_path, data_dir)
    notes = record_notifications(app)
    async with app.run_test(size=SIZE) as pilot:
        assert await wait_until(pilot, lambda: models_ready(app))
        await type_into(pilot, "#lr", "-1")
        app.setup_screen.query_one("#arch-table").focus()
        await pilot.press("s")
        assert await wait_until(pilot, lambda: any("Fix the form first" in note for note in notes), 20)
        error = app.setup_screen.query_one("#error-lr")
        assert "-1.0 must be greater than 0" in str(error.render())
        assert error.has_class("shown")
        assert app.setup_screen.query_one("#row-lr").has_class("error")
        # The message names the field as the form labels it, not by its command-line flag.
        assert any("learning rate: -1.0 must be greater than 0" in note for note in notes), notes
        assert not any("--lr" in note for note in notes)
        await pilot.pause(0.5)
        assert not app.training and isinstance(app.screen, SetupScreen)
    assert run_folders(tmp_path) == []


@asynchronous
async def test_keys_move_through_the_form_and_the_palette_reaches_every_screen(tmp_path, data_dir):
    app = make_app(tmp_path, data_dir)
    async with app.run_test(size=SIZE) as pilot:
        setup = app.setup_screen
        form = setup.query_one("#form")
        setup.query_one("#epochs").focus()
        await pilot.press("down")
        assert setup.focused.id == "batch_size" and form.has_class("-focus-within")  # the form is highlighted
        await pilot.press("up", "up")
        assert setup.focused.id == "init_from"  # the run group's last field: where the weights start
        await pilot.press("up", "up")
        assert setup.focused.id == "recipe"
        await pilot.press("shift+tab")  # up on a select opens its list, as Textual's Select does
        assert setup.focused.id == "dataset"
        await pilot.press("enter")
        assert setup.focused.id == "recipe"
        setup.query_one("#arch-table").focus()
        await pilot.pause()
        assert not form.has_class("-focus-within")  # the focus left the form: so did its highlight

        footer = setup.query_one(FittedFooter)

        def shown() -> set[str]:
            return {key.action for key in footer.query(FooterKey)}

        setup.query_one("#epochs").focus()  # in a field, letters are typing: the footer drops the letter keys
        assert await wait_until(pilot, lambda: "runs" not in shown() and "filter_architectures" in shown(), 5)
        keys = list(footer.query(FooterKey))
        await pilot.press("down")  # to another number field: the same keys, so the same footer, not a rebuilt one
        await pilot.pause(0.2)
        assert setup.focused.id == "batch_size" and list(footer.query(FooterKey)) == keys
        setup.query_one("#dataset").focus()  # in a text field / is typing too: the footer drops "Filter"
        assert await wait_until(pilot, lambda: "filter_architectures" not in shown() and "start" in shown(), 5)
        setup.query_one("#arch-table").focus()
        await pilot.press("ctrl+p")
        await pilot.pause(0.3)
        await pilot.press(*"show runs", "enter")
        assert await wait_until(pilot, lambda: isinstance(app.screen, RunsScreen), 5)
        await pilot.press("ctrl+p")  # the runs screen's own keys are in the palette too
        await pilot.pause(0.3)
        await pilot.press(*"queue", "enter")
        assert await wait_until(pilot, lambda: isinstance(app.screen, QueueScreen), 5)
        await pilot.press("escape")
        assert await wait_until(pilot, lambda: isinstance(app.screen, RunsScreen), 5)
        await pilot.press("escape")
        assert await wait_until(pilot, lambda: isinstance(app.screen, SetupScreen), 5)
        assert await wait_until(pilot, lambda: {"runs", "filter_architectures"} <= shown(), 5)  # the list's keys again


@asynchronous
async def test_the_runs_folder_is_a_visible_field_and_never_carried_to_the_next_launch(tmp_path, data_dir):
    elsewhere = tmp_path / "elsewhere"
    first = app_for(tmp_path, data_dir, tiny_config(tmp_path, data_dir, runs_dir=str(elsewhere)), runs_dir=elsewhere)
    async with first.run_test(size=SIZE) as pilot:
        assert await wait_until(pilot, lambda: models_ready(first))
        assert first.setup_screen.query_one("#runs_dir").value == str(elsewhere)
        await pilot.press("s")
        assert await wait_until(pilot, lambda: first.dashboard.outcome is not None, 120)
    assert len(list(elsewhere.iterdir())) == 1
    assert str(elsewhere) not in (tmp_path / "config" / "last.toml").read_text()

    second = app_for(tmp_path, data_dir)  # a plain `workbench` later
    async with second.run_test(size=SIZE) as pilot:
        assert await wait_until(pilot, lambda: models_ready(second))
        field = second.setup_screen.query_one("#runs_dir")
        assert field.value == "runs" and second.runs_dir == Path("runs")
        field.value = str(tmp_path / "typed")
        await pilot.pause()
        assert second.runs_dir == tmp_path / "typed"  # the runs list follows what the form says


@asynchronous
async def test_tab_from_the_list_reaches_the_form_and_slash_filters(tmp_path, data_dir):
    app = app_for(tmp_path, data_dir)
    async with app.run_test(size=SIZE) as pilot:
        assert await wait_until(pilot, lambda: models_ready(app))
        setup = app.setup_screen
        setup.query_one("#arch-table").focus()
        await pilot.press("tab")
        assert setup.focused.id == "preset"  # no invisible stop in between
        seen = ["preset"]
        while True:  # one round of the tab stops: every stop is a field the user can see and change
            await pilot.press("tab")
            assert setup.focused is not None and setup.focused.id not in (None, "form"), setup.focused
            if setup.focused.id == "preset":
                break
            seen.append(setup.focused.id)
            assert len(seen) < 60, seen  # the round ends
        assert {"epochs", "lr", "arch-table"} <= set(seen), seen
        setup.query_one("#arch-table").focus()
        assert "/" in setup.query_one("#arch-filter").placeholder
        await pilot.press("slash", "r", "e", "s")
        await pilot.pause(0.2)
        assert isinstance(app.screen, SetupScreen)  # the letters filtered; r did not open the runs list
        names = setup.query_one("#arch-list").visible_names
        assert setup.query_one("#arch-list").chosen == names[0]  # what is highlighted is what trains
        assert names and all("res" in name or "res" in desc for name, desc in
                             ((a.name, a.description.lower()) for a in setup.query_one("#arch-list").architectures
                              if a.name in names))


@asynchronous
async def test_slash_filters_from_a_number_field_and_escape_leaves_a_field(tmp_path, data_dir):
    app = app_for(tmp_path, data_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        assert await wait_until(pilot, lambda: models_ready(app))
        setup = app.setup_screen
        epochs = setup.query_one("#epochs")
        epochs.focus()
        epochs.value = "3"
        await pilot.press("slash", "c", "o", "n", "v")  # was: epochs "3/conv"
        await pilot.pause(0.2)
        assert epochs.value == "3" and setup.query_one("#arch-filter").value == "conv"
        assert setup.focused.id == "arch-filter"
        dataset = setup.query_one("#dataset")
        dataset.focus()
        await pilot.pause()
        dataset.value = ""
        await pilot.press("~", "slash", "d")  # a folder's path keeps its slashes
        assert dataset.value == "~/d" and setup.focused is dataset
        await pilot.press("escape")  # leaves the field; what was typed stays
        assert setup.focused.id == "arch-table" and dataset.value == "~/d"
        await pilot.press("r")  # a letter is the app's key again: the runs list
        assert await wait_until(pilot, lambda: isinstance(app.screen, RunsScreen))


@asynchronous
async def test_the_form_says_what_image_size_0_means_for_a_folder_and_for_a_named_set(tmp_path, data_dir):
    from tests.support.folders import image_folder

    photos = image_folder(tmp_path / "photos")
    app = app_for(tmp_path, data_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        assert await wait_until(pilot, lambda: models_ready(app))
        note = app.setup_screen.query_one("#error-image_size")
        assert await wait_until(pilot, lambda: "the data set's own size" in str(note.render()))
        app.setup_screen.set_value("dataset", str(photos))
        assert await wait_until(pilot, lambda: "a folder's photos are resized to 32 px unless you give a size"
                                in str(note.render()), 30)
        app.setup_screen.set_value("image_size", "48")
        assert await wait_until(pilot, lambda: str(note.render()).strip() == "", 30)  # a size given: nothing to explain


@asynchronous
async def test_checked_and_unchecked_boxes_differ_without_colour(tmp_path, data_dir):
    app = app_for(tmp_path, data_dir)
    async with app.run_test(size=SIZE) as pilot:
        assert await wait_until(pilot, lambda: models_ready(app))
        on = app.setup_screen.query_one("#augment-crop")
        off = app.setup_screen.query_one("#augment-rotate")
        assert on.value and not off.value
        assert "X" in on.render().plain and "X" not in off.render().plain


@asynchronous
async def test_the_form_starts_a_finetune_run_from_another_run_and_the_dashboard_shows_its_phase(tmp_path, data_dir):
    import json

    from workbench.core.training.engine import fit

    source = fit(tiny_config(tmp_path, data_dir, runs_dir=str(tmp_path / "first")), lambda event: None)  # linear
    app = app_for(tmp_path, data_dir, tiny_config(tmp_path, data_dir, epochs=2), tmp_path / "runs")
    async with app.run_test(size=SIZE) as pilot:
        assert await wait_until(pilot, lambda: models_ready(app))
        await paste_into(pilot, "#init_from", str(source))
        app.setup_screen.query_one("#recipe").value = "finetune"
        await pilot.pause()
        assert not app.setup_screen.query_one("#freeze_epochs").disabled  # the recipe's own fields wake up
        app.setup_screen.query_one("#arch-table").focus()
        await pilot.press("s")
        dashboard = app.dashboard
        assert await wait_until(pilot, lambda: dashboard.view.training_phase != "" or dashboard.outcome is not None, 120)
        assert await wait_until(pilot, lambda: dashboard.outcome is not None, 120)
        assert dashboard.view.training_phase.startswith("every layer")
        log = " ".join(" ".join(line.text for line in dashboard.query_one("#log").lines).split())
        assert "epoch 1 on: head only" in log and "starting from run" in log
    (run_dir,) = run_folders(tmp_path)
    assert json.loads((run_dir / "run.json").read_text())["start"]["source"].startswith(f"run {source.name}")


@asynchronous
async def test_a_start_from_run_that_is_not_a_run_is_the_fields_own_error(tmp_path, data_dir):
    app = app_for(tmp_path, data_dir, tiny_config(tmp_path, data_dir), tmp_path / "runs")
    notes = record_notifications(app)
    async with app.run_test(size=SIZE) as pilot:
        assert await wait_until(pilot, lambda: models_ready(app))
        await paste_into(pilot, "#init_from", str(tmp_path / "no such run"))
        app.setup_screen.query_one("#arch-table").focus()
        await pilot.press("s")
        assert await wait_until(pilot, lambda: app.setup_screen.query_one("#row-init_from").has_class("error"), 30)
        await pilot.pause(0.3)
        assert isinstance(app.screen, SetupScreen) and not app.training
        assert not any("--init-from" in note for note in notes), notes  # the form's words, not the flag's
    assert run_folders(tmp_path) == []


@asynchronous
async def test_a_filter_only_looks_emptying_it_gives_the_choice_back_unless_a_row_was_picked(tmp_path, data_dir):
    app = app_for(tmp_path, data_dir)
    async with app.run_test(size=SIZE) as pilot:
        assert await wait_until(pilot, lambda: models_ready(app))
        setup = app.setup_screen
        arch_list, field = setup.query_one("#arch-list"), setup.query_one("#arch-filter")
        before = arch_list.chosen
        await pilot.press("slash", "v", "g", "g")
        await pilot.pause(0.2)
        assert arch_list.chosen == "vgg11_bn" and setup.form_values()["arch"] == "vgg11_bn"  # what trains is shown
        await pilot.press("backspace", "backspace", "backspace")
        await pilot.pause(0.2)
        assert field.value == "" and arch_list.chosen == before and setup.form_values()["arch"] == before
        await pilot.press("r", "e", "s", "n", "e", "t", "enter", "down")  # to the list, then a row of its own
        await pilot.pause(0.2)
        picked = arch_list.chosen
        assert picked != before and "resnet" in picked
        field.focus()
        await pilot.press(*["backspace"] * 6, "n", "e", "t", "5")  # another filter picks lenet5 for the moment
        await pilot.pause(0.2)
        assert arch_list.chosen == "lenet5"
        await pilot.press(*["backspace"] * 4)
        await pilot.pause(0.2)
        assert field.value == "" and arch_list.chosen == picked  # the row the user picked, not the filter's
        await pilot.press("q", "q", "q")  # nothing matches: the user's choice stays, and the summary says so
        await pilot.pause(0.2)
        assert arch_list.chosen == picked and setup.form_values()["arch"] == picked
        said = " ".join(str(setup.query_one("#arch-summary").render()).split())
        assert "no architecture matches qqq" in said and f"{picked} stays chosen" in said, said
        setup.query_one("#preset").value = "shapes-quick"  # a preset's network, hidden by the filter
        await pilot.pause(0.5)
        assert field.value == "" and arch_list.chosen == setup.form_values()["arch"] == "basic_cnn"


@asynchronous
async def test_the_summary_says_whole_sentences_when_nothing_can_be_counted(tmp_path, data_dir):
    (tmp_path / "empty").mkdir()
    app = app_for(tmp_path, data_dir)
    async with app.run_test(size=SIZE) as pilot:
        assert await wait_until(pilot, lambda: models_ready(app))
        summary = app.setup_screen.query_one("#arch-summary")

        def said() -> str:
            return " ".join(str(summary.render()).split())

        app.setup_screen.set_value("dataset", str(tmp_path / "empty"))
        assert await wait_until(pilot, lambda: "no parameter counts: folder" in said(), 30), said()
        assert "has no class subfolders" in said() and "counting" not in said() and "(no counts" not in said()
        app.setup_screen.set_value("dataset", "shapes")
        app.setup_screen.set_value("image_size", "8")  # basic_cnn's layers shrink 8 px to nothing
        assert await wait_until(pilot, lambda: "no parameter count: it cannot take the images of shapes (3×8×8"
                                in said(), 30), said()
