"""ClassAccuracy: test accuracy per class after the latest epoch, with a bar per class."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import DataTable

from workbench.ui import formatting as fmt

BAR_WIDTH = 6


class ClassAccuracy(DataTable):
    """One row per class; the weakest classes are marked so they stand out."""

    def on_mount(self) -> None:
        self.cursor_type = "none"
        self.zebra_stripes = True
        self.add_columns("class", "acc", "")

    def show(self, per_class: dict[str, float]) -> None:
        self.clear()
        if not per_class:
            return
        weakest = sorted(per_class.values())[: max(1, len(per_class) // 5)]
        threshold = weakest[-1]
        for name, acc in per_class.items():
            style = "bold red" if acc <= threshold and acc < 0.999 else ""
            self.add_row(
                Text(name, style=style),
                Text(fmt.percent(acc), justify="right", style=style),
                Text(fmt.bar(acc, BAR_WIDTH), style="green" if not style else style),
                key=name,
            )
