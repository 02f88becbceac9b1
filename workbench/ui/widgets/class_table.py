"""ClassAccuracy: per-class accuracy (recall), precision and F1 after the latest evaluation."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import DataTable

from workbench.core.shown import shown
from workbench.ui import formatting as fmt

BAR_WIDTH = 5


class ClassAccuracy(DataTable):
    """One row per class; the weakest classes are marked in colour and with a '!' so they
    stand out without colour too."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="none", zebra_stripes=True)
        # The columns exist from the start: rows that arrive before the table is mounted (a run
        # replayed at once) must size them exactly as rows that arrive later do.
        self.add_columns("class", "acc", "prec", "F1", "")

    def show(self, per_class: dict[str, float], precision: dict[str, float] | None = None,
             f1: dict[str, float] | None = None) -> None:
        self.clear()
        if not per_class:
            return
        weakest = sorted(per_class.values())[: max(1, len(per_class) // 5)]
        threshold = weakest[-1]
        for name, acc in per_class.items():
            weak = acc <= threshold and acc < 0.999
            style = "bold red" if weak else ""
            self.add_row(
                Text(("! " if weak else "  ") + shown(name), style=style),
                Text(fmt.percent(acc), justify="right", style=style),
                Text(fmt.percent((precision or {}).get(name), 0), justify="right"),
                Text(_two(f1, name), justify="right"),
                Text(fmt.bar(acc, BAR_WIDTH), style="green" if not style else style),  # last: the first cut
                key=name,
            )


def _two(values: dict[str, float] | None, name: str) -> str:
    value = (values or {}).get(name)
    return "-" if value is None else f"{value:.2f}"
