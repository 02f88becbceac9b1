"""Driving the app under Pilot: waiting on conditions, tiny configs, notifications, test PNGs."""

from __future__ import annotations

import asyncio
import functools
import os
import sys
import time
from pathlib import Path
from typing import Callable

from PIL import Image

from workbench.core.config import RunConfig
from workbench.ui.app import WorkbenchApp, build_app

SIZE = (120, 40)


def asynchronous(test):
    """Run an async test with asyncio.run (no pytest async plugin is needed)."""

    @functools.wraps(test)
    def run(*args, **kwargs):
        return asyncio.run(test(*args, **kwargs))

    return run


async def wait_until(pilot, predicate: Callable[[], bool], timeout: float = 90.0) -> bool:
    """Let the app run until predicate() holds; False after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await pilot.pause(0.1)
    if os.environ.get("WB_DEBUG"):
        import faulthandler
        faulthandler.dump_traceback(sys.__stderr__)
        app = pilot.app
        print("screen", app.screen, "training", getattr(app, "training", None))
        for line in app.dashboard.query_one("#log").lines[-15:]:
            print(line.text)
    return predicate()


def tiny_config(tmp_path: Path, data_dir: Path, **changes) -> RunConfig:
    values = dict(
        dataset="shapes", arch="linear", epochs=1, batch_size=256, runs_dir=str(tmp_path / "runs"),
        data_dir=str(data_dir), augment="flip", device="cpu",
    )
    return RunConfig.from_mapping({**values, **changes})


def make_app(tmp_path: Path, data_dir: Path, initial: RunConfig | None = None) -> WorkbenchApp:
    return build_app(initial, runs_dir=tmp_path / "runs", config_dir=tmp_path / "config", data_dir=data_dir)


def models_ready(app: WorkbenchApp) -> bool:
    found = app.setup_screen.query("#arch-list")
    if not found:
        return False
    arch_list = found.first()
    return bool(arch_list.architectures) and len(arch_list.params) == len(arch_list.architectures)


def record_notifications(app: WorkbenchApp) -> list[str]:
    notes: list[str] = []
    original = app.notify

    def notify(message, **kwargs):
        notes.append(str(message))
        return original(message, **kwargs)

    app.notify = notify  # type: ignore[method-assign]
    return notes


def run_folders(tmp_path: Path) -> list[Path]:
    runs = tmp_path / "runs"
    return sorted(p for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []


async def _emptied(pilot, selector: str):
    """The field, focused and emptied with the keys a user would press."""
    widget = pilot.app.screen.query_one(selector)
    widget.focus()
    await pilot.pause()
    await pilot.press("end", *["backspace"] * (len(widget.value) + 1))
    return widget


async def type_into(pilot, selector: str, text: str) -> None:
    await _emptied(pilot, selector)
    await pilot.press(*text)


async def paste_into(pilot, selector: str, text: str) -> None:
    """Empty a field and paste `text` into it, as a user pastes a path (typing one key at a time
    costs a tenth of a second a character)."""
    from textual import events

    (await _emptied(pilot, selector)).post_message(events.Paste(text))
    await pilot.pause()



def write_test_pngs(run_dir: Path) -> list[Path]:
    """Three PNGs with known pixels and distinct modification times (oldest first)."""
    images = run_dir / "images"
    images.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, (name, size) in enumerate([("gradient.png", (64, 48)), ("checks.png", (20, 20)), ("big.png", (900, 700))]):
        image = Image.new("RGB", size)
        image.putdata([
            ((x * 4 + index * 40) % 256, (y * 5) % 256, ((x // 4 + y // 4) % 2) * 255)
            for y in range(size[1]) for x in range(size[0])
        ])
        path = images / name
        image.save(path)
        os.utime(path, (1_700_000_000 + index * 60, 1_700_000_000 + index * 60))
        paths.append(path)
    return paths


def app_in(folder: Path):
    """The app working in `folder` (the current folder), with paths on screen relative to it."""
    return build_app(None, runs_dir=Path("runs"), config_dir=folder / "config", data_dir=folder / "data")


async def settle(pilot) -> None:
    """Let pending work land, then drop toasts (they time out, so they would make snapshots vary)."""
    await pilot.pause(0.2)
    pilot.app.clear_notifications()
    await pilot.pause(0.3)


def app_for(tmp_path, data_dir, config=None, runs_dir=None):
    return build_app(config, runs_dir=runs_dir, config_dir=tmp_path / "config", data_dir=data_dir)
