"""Small image folders the tests make themselves, configs that train on them, and byte snapshots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from workbench.core.config import RunConfig


def image_folder(root: Path, classes=("ant", "bee", "cow"), per_class: int = 12, size: int = 8) -> Path:
    """train/<class>/*.png and test/<class>/*.png: small coloured squares, one colour per class."""
    generator = np.random.default_rng(0)
    for split, count in (("train", per_class), ("test", max(per_class // 3, 2))):
        for label, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                pixels = np.clip(generator.normal(60 + 80 * label, 20, (size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{index:03d}.png")
    return root


def photo_folder(root: Path, bad: bool = True) -> Path:
    """Two classes of JPEGs of varied sizes; with `bad`, a truncated, an empty and a fake image among them."""
    for split, count in (("train", 12), ("test", 4)):
        for index, colour in enumerate([(250, 20, 20), (20, 250, 20)]):
            folder = root / split / f"class{index}"
            folder.mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (20 + i, 30), colour).save(folder / f"{i}.jpg")
    if bad:
        good = root / "train" / "class0" / "0.jpg"
        (root / "train" / "class0" / "truncated.jpg").write_bytes(good.read_bytes()[:60])
        (root / "train" / "class0" / "empty.jpg").write_bytes(b"")
        (root / "train" / "class1" / "notes.png").write_text("this is not an image")
    return root


def folder_config(tmp_path: Path, dataset: Path, **changes) -> RunConfig:
    """A 1-epoch linear run on `dataset`, with its cache and runs under `tmp_path`."""
    values = dict(dataset=str(dataset), arch="linear", epochs=1, batch_size=8, device="cpu", image_size=8,
                  data_dir=str(tmp_path / "data"), runs_dir=str(tmp_path / "runs"), augment="none", val_fraction=0.2)
    return RunConfig.from_mapping({**values, **changes})


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file of a folder (hidden ones included) and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def wide_image(path: Path) -> Path:
    """64x32: left half red, right half blue, a green 8-pixel stripe in the middle."""
    image = Image.new("RGB", (64, 32), (255, 0, 0))
    image.paste((0, 0, 255), (32, 0, 64, 32))
    image.paste((0, 255, 0), (28, 0, 36, 32))
    image.save(path)
    return path
