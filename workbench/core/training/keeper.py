"""Which checkpoints a run keeps: last.pt every time, best.pt, and its K best epochs.

The K best epochs (by validation accuracy; an earlier epoch wins a tie) are kept as
checkpoints/epoch-NNN.pt, so an export can take any of them; best.pt is the best of them and
is never deleted. Every file is written atomically; an epoch file that drops out of the K best
is removed only after the new one is in place.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from workbench.core import checkpoint as ckpt
from workbench.core.atomic import TEMP_SUFFIX

EPOCH_FILE = "epoch-{epoch:03d}.pt"
_EPOCH_PATTERN = re.compile(r"^epoch-(\d{3,})\.pt$")


def epoch_file(epoch: int) -> str:
    return EPOCH_FILE.format(epoch=epoch)


def kept_epochs(folder: Path) -> list[int]:
    """The epochs a run kept a checkpoint of, in order."""
    found = []
    for path in Path(folder).glob("epoch-*.pt"):
        match = _EPOCH_PATTERN.match(path.name)
        if match:
            found.append(int(match.group(1)))
    return sorted(found)


class CheckpointKeeper:
    def __init__(self, folder: Path, keep: int, history: list[dict[str, Any]],
                 best: tuple[float | None, int | None] = (None, None)) -> None:
        self.folder = Path(folder)
        self.keep = max(int(keep), 1)
        scores = {row["epoch"]: row.get("val_acc") for row in history if isinstance(row.get("epoch"), int)}
        # What a resumed run already kept: its epoch files and best.pt, with the scores recorded.
        ranked = {e: scores[e] for e in kept_epochs(self.folder) if isinstance(scores.get(e), (int, float))}
        best_score, best_epoch = best
        if best_epoch is not None and best_score is not None and (self.folder / ckpt.BEST).is_file():
            ranked[best_epoch] = best_score
        self.ranked = sorted(((score, epoch) for epoch, score in ranked.items()), key=lambda item: (-item[0], item[1]))

    def save(self, state: dict[str, Any], epoch: int, score: float | None) -> list[tuple[Path, bool]]:
        """Save last.pt, and when `score` places `epoch` among the K best, its epoch file (and
        best.pt when it is the best). Returns (path, is_best) of every file written."""
        written = [(ckpt.save_last(state, self.folder), False)]
        if score is None:
            return written
        ranking = sorted([*self.ranked, (score, epoch)], key=lambda item: (-item[0], item[1]))
        if (score, epoch) not in ranking[: self.keep]:
            return written
        best = ranking[0] == (score, epoch)
        if self.keep > 1:
            path = self.folder / epoch_file(epoch)
            ckpt.save_atomic(state, path)
            written.append((path, False))
        if best:
            self._save_best(state, epoch)
            written.append((self.folder / ckpt.BEST, True))
        for _, dropped in ranking[self.keep :]:
            (self.folder / epoch_file(dropped)).unlink(missing_ok=True)
        self.ranked = ranking[: self.keep]
        return written

    def _save_best(self, state: dict[str, Any], epoch: int) -> None:
        """best.pt: a hard link to the epoch file when there is one (no second copy), else its own file."""
        source = self.folder / epoch_file(epoch)
        if self.keep > 1 and source.is_file():
            temporary = self.folder / f".{ckpt.BEST}.link{TEMP_SUFFIX}"
            temporary.unlink(missing_ok=True)
            try:
                os.link(source, temporary)
                os.replace(temporary, self.folder / ckpt.BEST)
                return
            except OSError:
                temporary.unlink(missing_ok=True)
        ckpt.save_atomic(state, self.folder / ckpt.BEST)
