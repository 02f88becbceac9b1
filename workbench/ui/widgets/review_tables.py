"""Tables of a finished run: confusion matrix, per-class accuracy, model layers, class counts, top classes."""

from __future__ import annotations

from rich.text import Text
from textual.coordinate import Coordinate
from textual.widgets import DataTable

from workbench.core.shown import shown
from workbench.ui import formatting as fmt
from workbench.ui.inspect_workers import Guess, describe

BAR_WIDTH = 10
ACCURACY_KEY = "acc"
STRONG_CONFUSION = 0.1  # off-diagonal cells holding this share of their row stand out


def _text(value: str, style: str = "", justify: str | None = None) -> Text:
    """A cell as Text, so a class name with [brackets] is never read as markup, nor its control
    characters as terminal commands."""
    return Text(shown(value), style=style, justify=justify, end="", no_wrap=True)


def _number(value: int, style: str = "") -> Text:
    return _text(fmt.count(value), style, "right")


def short_name(name: str, width: int = 7) -> str:
    """A class name cut to `width` characters, an ellipsis marking the cut."""
    return name if len(name) <= width else name[: width - 1] + "…"


class ConfusionTable(DataTable):
    """Rows are the true class, columns the predicted one (same names, cut to fit); the last column is accuracy."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(cursor_type="cell", id=id)
        self.class_names: list[str] = []
        self.matrix: list[list[int]] = []

    def show(self, classes: list[str], matrix: list[list[int]], room: int = 0) -> None:
        """`room`: the columns the table may take; its class columns share what the row labels and
        the accuracy leave (each at least 7 characters, a count's width)."""
        self.class_names, self.matrix = classes, matrix
        self.clear(columns=True)
        labels = max((len(f"{index} {name}") for index, name in enumerate(classes)), default=0)
        share = (room - labels - 4 - 8) // max(len(classes), 1) - 2  # borders and padding, "acc", padding
        width = max(7, min(share, max((len(name) for name in classes), default=0)))
        for index, name in enumerate(classes):  # columns named like the rows, cut to fit
            self.add_column(_text(short_name(name, width), justify="right"), key=str(index))
        self.add_column(_text("acc", "", "right"), key=ACCURACY_KEY)
        for true, row in enumerate(matrix):
            total = sum(row)
            cells = [_number(n, self._style(true, predicted, n, total)) for predicted, n in enumerate(row)]
            accuracy = row[true] / total if total else 0.0
            cells.append(_text(fmt.percent(accuracy), justify="right", style="bold"))
            self.add_row(*cells, key=str(true), label=_text(f"{true} {classes[true]}", style="bold"))

    @staticmethod
    def _style(true: int, predicted: int, n: int, total: int) -> str:
        if true == predicted:
            return "bold black on green" if n else "black on green"
        if n == 0:
            return "dim"
        return "bold red" if total and n / total >= STRONG_CONFUSION else "yellow"

    def cell(self, coordinate: Coordinate) -> tuple[int, int] | None:
        """(true, predicted) for a count cell; None for the accuracy column or outside the matrix."""
        true, predicted = coordinate
        if true >= len(self.matrix) or predicted >= len(self.class_names):
            return None
        return true, predicted

    def describe_cell(self, coordinate: Coordinate) -> str:
        found = self.cell(coordinate)
        if found is None:
            row = coordinate.row
            if row >= len(self.matrix):
                return ""
            total = sum(self.matrix[row])
            return f"{shown(self.class_names[row])}: {fmt.count(self.matrix[row][row])} of {fmt.count(total)} test images right"
        true, predicted = found
        n = self.matrix[true][predicted]
        images = f"{fmt.count(n)} test image{'' if n == 1 else 's'}"
        if true == predicted:
            return f"{self.class_names[true]} classified correctly: {images}" + (" · enter shows them" if n else "")
        what = f"true {self.class_names[true]} predicted as {self.class_names[predicted]}: {images}"
        return what + (" · enter shows them" if n else "")


class ClassScores(DataTable):
    """Test accuracy per class, in class order or weakest first."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, id=id)
        self.scores: list = []  # core.metrics.ClassReport, one per class
        self.weakest_first = False

    def on_mount(self) -> None:
        self.add_column("class", key="class")
        self.add_column(_text("images", "", "right"), key="images")
        self.add_column(_text("correct", "", "right"), key="correct")
        self.add_column(_text("accuracy", "", "right"), key="accuracy")
        self.add_column("", key="bar")
        self.add_column(_text("precision", "", "right"), key="precision")
        self.add_column(_text("F1", "", "right"), key="f1")

    def show(self, scores: list) -> None:
        self.scores = scores
        self._fill()

    def toggle_order(self) -> None:
        self.weakest_first = not self.weakest_first
        self._fill()

    def _fill(self) -> None:
        self.clear()
        order = sorted(self.scores, key=lambda s: (s.recall, s.name)) if self.weakest_first else self.scores
        if not order:
            return
        threshold = sorted(s.recall for s in self.scores)[max(1, len(self.scores) // 5) - 1]
        for score in order:
            style = "bold red" if score.recall <= threshold and score.recall < 0.999 else ""
            self.add_row(
                _text(score.name, style=style),
                _number(score.support),
                _number(score.correct),
                _text(fmt.percent(score.recall), justify="right", style=style),
                _text(fmt.bar(score.recall, BAR_WIDTH), style=style or "green"),
                _text(fmt.percent(score.precision), justify="right"),
                _text(f"{score.f1:.2f}", justify="right"),
                key=score.name,
            )
        self.border_subtitle = "weakest first · a: class order" if self.weakest_first else "class order · a: weakest first"


class LayerTable(DataTable):
    """The model like a printed one: containers as headings, each leaf with its output shape and parameters."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, id=id)

    def on_mount(self) -> None:
        self.add_column("layer", key="layer")
        self.add_column("type", key="type")
        self.add_column("output shape", key="shape")
        self.add_column(_text("parameters", "", "right"), key="params")

    def show(self, layers: list, total_params: int) -> None:
        """`layers` are core.summary.LayerRow in the order the forward pass reached them; a
        fine-tuned run's say when each layer trains (a column of its own)."""
        marked = any(layer.trains for layer in layers)
        self.clear(columns=True)
        self.on_mount()
        if marked:
            self.add_column("trains", key="trains")
        open_path: list[str] = []
        for layer in layers:
            parts = layer.name.split(".")
            parents = parts[:-1]
            shared = 0
            while shared < min(len(parents), len(open_path)) and parents[shared] == open_path[shared]:
                shared += 1
            for depth in range(shared, len(parents)):  # a container entered: its name as a heading
                self.add_row(_text("  " * depth + parents[depth], style="bold"), "", "", "", *(("",) if marked else ()))
            open_path = parents
            self.add_row(
                _text("  " * len(parents) + parts[-1]),
                _text(layer.kind, style="cyan"),
                _text(describe(layer.output_shape)),
                _number(layer.params, "" if layer.params else "dim"),
                *((_text(layer.trains, style="" if "head" in layer.trains else "yellow"),) if marked else ()),
            )
        self.add_row(_text("total", style="bold"), "", "", _number(total_params, "bold"), *(("",) if marked else ()))
        self.border_subtitle = f"{fmt.count(total_params)} parameters"


class ClassCounts(DataTable):
    """Images per class in the splits the run used: train (what it trained on), val when it held
    some of the training data out, and test."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, id=id)

    def show(self, classes: list[str], train: list[int], test: list[int], val: list[int] | None = None) -> None:
        splits = [("train", train)] + ([("val", val)] if val is not None else []) + [("test", test)]
        self.clear(columns=True)
        self.add_column("class", key="class")
        for split, _ in splits:
            self.add_column(_text(split, "", "right"), key=split)
        for i, name in enumerate(classes):
            self.add_row(_text(name), *(_number(counts[i]) for _, counts in splits))
        self.add_row(_text("total", style="bold"), *(_number(sum(counts), "bold") for _, counts in splits))


class TopClasses(DataTable):
    """The most likely classes for one image, with the spread over Monte-Carlo dropout passes."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(cursor_type="none", id=id)

    def on_mount(self) -> None:
        self.add_column(_text("#", "", "right"), key="rank")
        self.add_column("class", key="class")
        self.add_column(_text("probability", "", "right"), key="probability")
        self.add_column("", key="bar")

    def show(self, guesses: list[Guess], passes: int) -> None:
        self.clear()
        for rank, guess in enumerate(guesses, start=1):
            probability = fmt.percent(guess.probability)
            if passes:
                probability += f" ± {guess.spread * 100:.1f}"
            self.add_row(
                _number(rank),
                _text(guess.name, style="bold" if rank == 1 else ""),
                _text(probability, "", "right"),
                _text(fmt.bar(guess.probability, BAR_WIDTH), style="green"),
                key=str(rank),
            )
