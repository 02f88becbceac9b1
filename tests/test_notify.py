"""Notifications: the bell and OSC 9/777 written to the terminal, notify-send called when present,
and the engine's control file reaching a run from another process."""

from __future__ import annotations

import io
import os
import stat
import threading

from tests.support.cli import one_line_error, run_here
from workbench.core.events import Failed, Finished, StepMetrics
from workbench.core.notify import Notifier, NotifyOnEnd, osc_sequences, parse_channels
from workbench.core.training.control import TrainControl
from workbench.core.training.engine import fit


def fake_notify_send(folder):
    """A notify-send on PATH that records its arguments."""
    folder.mkdir(exist_ok=True)
    script = folder / "notify-send"
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" >> "{folder / "calls.txt"}"\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return folder / "calls.txt"


def test_bell_and_osc_sequences_are_written_without_notify_send(tmp_path):
    out = io.StringIO()
    done = Notifier(("bell", "desktop"), out, env={"PATH": str(tmp_path)})("workbench: run finished", "best 90%")
    assert done == ["bell", "osc"]
    assert out.getvalue() == "\a\x1b]9;workbench: run finished: best 90%\x07\x1b]777;notify;workbench: run finished;best 90%\x07"


def test_notify_send_is_called_when_present_but_not_over_ssh(tmp_path):
    calls = fake_notify_send(tmp_path / "bin")
    out = io.StringIO()
    env = {"PATH": str(tmp_path / "bin") + os.pathsep + os.environ["PATH"]}
    assert Notifier(("desktop",), out, env=env)("title", "the message") == ["notify-send"]
    assert calls.read_text().splitlines() == ["--app-name=workbench", "title", "the message"]
    assert out.getvalue() == ""
    over_ssh = Notifier(("desktop",), out, env={**env, "SSH_CONNECTION": "1.2.3.4 22 5.6.7.8 22"})
    assert over_ssh("title", "remote") == ["osc"] and "\x1b]777;notify;title;remote\x07" in out.getvalue()


def test_osc_text_cannot_break_out_of_its_sequence():
    assert osc_sequences("a;b", "c\x07d\x1b]") == "\x1b]9;ab: cd]\x07\x1b]777;notify;ab;cd]\x07"


def test_unknown_channel_is_refused(capsys):
    assert parse_channels("bell, desktop") == ("bell", "desktop")
    assert "'pager' is not one of bell, desktop" in one_line_error(capsys, ["train", "--notify", "bell,pager", "--epochs", "1"])


def test_the_end_of_a_run_says_why(tmp_path):
    out = io.StringIO()
    sink = NotifyOnEnd(Notifier(("desktop",), out, env={"PATH": ""}))
    sink(StepMetrics(1, 1, 1, 1, 1.0, 0.5, 0.1, 1.0, 1.0, 1.0))  # nothing yet
    assert out.getvalue() == ""
    sink(Failed(tmp_path / "run-a", "the loss became NaN at step 12; lower the learning rate"))
    assert "run-a failed;the loss became NaN at step 12" in out.getvalue()
    sink(Finished(tmp_path / "run-b", "stopped", 1, 2.0, reason="SIGTERM"))
    assert "run-b stopped;stopped by SIGTERM after 1 epoch" in out.getvalue()


def test_train_notify_desktop_calls_notify_send_when_the_run_finishes(tmp_path, data_dir, monkeypatch):
    calls = fake_notify_send(tmp_path / "bin")
    monkeypatch.setenv("PATH", str(tmp_path / "bin") + os.pathsep + os.environ["PATH"])
    for variable in ("SSH_CONNECTION", "SSH_TTY"):  # over SSH the desktop is not this machine's
        monkeypatch.delenv(variable, raising=False)
    result = run_here("train", "--dataset", "shapes", "--arch", "linear", "--epochs", "1", "--image-size", "12",
                      "--device", "cpu", "--data-dir", data_dir, "--runs-dir", tmp_path / "runs",
                      "--notify", "bell,desktop")
    assert result.returncode == 0, result.stderr
    sent = calls.read_text().splitlines()
    assert sent[1].startswith("workbench: ") and sent[1].endswith(" finished") and "finished after 1 epoch" in sent[2]


def test_the_control_file_pauses_and_stops_a_run(tiny):
    control = TrainControl()
    seen = threading.Event()

    def on_event(event):
        if isinstance(event, StepMetrics) and not seen.is_set():
            seen.set()
            (event_run_dir[0] / "control").write_text("pause")

    event_run_dir = []

    def sink(event):
        if hasattr(event, "run_dir") and event.run_dir is not None and not event_run_dir:
            event_run_dir.append(event.run_dir)
        on_event(event)

    worker = threading.Thread(target=fit, args=(tiny(arch="linear", epochs=30, image_size=12), sink, control))
    worker.start()
    assert seen.wait(120)
    deadline = 100
    while not control.paused and deadline:
        worker.join(0.05)
        deadline -= 1
    assert control.paused, "the trainer never read the control file"
    (event_run_dir[0] / "control").write_text("stop")
    worker.join(60)
    assert not worker.is_alive() and control.stop_requested
    assert (event_run_dir[0] / "status").read_text().startswith("stopped")
