"""`workbench watch RUN`: the app opened straight onto the live dashboard of a run in another process."""

from __future__ import annotations

from pathlib import Path

from workbench.ui.app import WorkbenchApp
from workbench.ui.settings import default_config_dir, read_last_values


class WatchApp(WorkbenchApp):
    """The whole app (escape leads to the setup screen and the runs list) with a run watched on top."""

    def __init__(self, run_dir: Path, config_dir: Path | None = None) -> None:
        config_dir = Path(config_dir) if config_dir is not None else default_config_dir()
        values = read_last_values(config_dir)
        values["runs_dir"] = str(Path(run_dir).parent)  # the runs list shows the watched run's folder
        super().__init__(values, data_dir=str(values.get("data_dir") or ""), config_dir=config_dir)
        self.watched = Path(run_dir)

    def on_mount(self) -> None:  # Textual runs WorkbenchApp.on_mount too
        self.watch_run(self.watched)  # before the first paint: the setup screen is only what escape leads to


def run_watch_app(run_dir: Path) -> int:
    result = WatchApp(run_dir).run()
    return result if isinstance(result, int) else 0
