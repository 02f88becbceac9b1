"""Inspection files: exact pixels in PNG grids, confusion counts, top losses and eval-mode predictions."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from workbench.core.data.normalize import normalize, to_uint8
from workbench.core.errors import WorkbenchError
from workbench.core.inspection.grids import Cell, save_confusion, save_grid
from workbench.core.inspection.predictions import (
    Predictions,
    confusion_cell_indices,
    predict,
    save_confusion_cell,
    top_losses,
)
from workbench.core.metrics import class_reports, confusion_matrix, per_class_accuracy

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def random_images(count: int, channels: int, size: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, channels, size, size), generator=generator, dtype=torch.uint8)


def read_rgb(path) -> torch.Tensor:
    with Image.open(path) as image:
        assert image.mode == "RGB"
        return torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).reshape(image.height, image.width, 3)


@pytest.mark.parametrize(("channels", "size", "mean", "std"), [(3, 32, CIFAR_MEAN, CIFAR_STD), (1, 28, MNIST_MEAN, MNIST_STD)])
def test_normalize_then_to_uint8_gives_back_the_same_bytes(channels, size, mean, std):
    images = random_images(64, channels, size)
    images[0] = 0  # the extremes must survive too
    images[1] = 255
    normalised = normalize(images, mean, std)
    assert normalised.dtype == torch.float32
    assert torch.equal(to_uint8(normalised, mean, std), images)


def test_to_uint8_clamps_and_never_rescales_per_image():
    dim = torch.full((1, 3, 4, 4), -0.5)  # a dark image stays dark: no per-image stretching
    bright = torch.full((1, 3, 4, 4), 9.0)
    result = to_uint8(torch.cat([dim, bright]), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert result.dtype == torch.uint8
    assert torch.equal(result[0], torch.full((3, 4, 4), 64, dtype=torch.uint8))
    assert torch.equal(result[1], torch.full((3, 4, 4), 255, dtype=torch.uint8))


def test_normalize_rejects_channel_mismatch_and_zero_std():
    images = random_images(2, 3, 8)
    with pytest.raises(ValueError, match="channels"):
        normalize(images, (0.5,) * 2, (0.5,) * 2)
    with pytest.raises(ValueError, match="positive"):
        normalize(images, (0.5,) * 3, (0.5, 0.0, 0.5))


@pytest.mark.parametrize(("channels", "size", "expected_scale"), [(3, 32, 2), (1, 28, 3)])
def test_grid_boxes_hold_the_exact_source_pixels(tmp_path, channels, size, expected_scale):
    images = random_images(10, channels, size, seed=channels)
    cells = [Cell(index=1000 + i, label=i, prediction=(i + i % 2) % 10, confidence=0.25 + i / 20) for i in range(10)]
    sidecar_path = save_grid(tmp_path / "grid.png", images, cells, CLASSES, title="exact")

    sidecar = json.loads(sidecar_path.read_text())
    assert sidecar_path == tmp_path / "grid.json" and sidecar["file"] == "grid.png"
    assert sidecar["scale"] == expected_scale and sidecar["cell_size"] == [size, size]
    sheet = read_rgb(tmp_path / "grid.png")
    scale = sidecar["scale"]
    for number, record in enumerate(sidecar["cells"]):
        left, top, right, bottom = record["box"]
        assert (bottom - top, right - left) == (scale * size, scale * size)
        box = sheet[top:bottom, left:right].permute(2, 0, 1)  # (3, H*scale, W*scale)
        source = images[number].expand(3, -1, -1)  # gray is written as R=G=B
        assert torch.equal(box[:, ::scale, ::scale], source)
        nearest = source.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
        assert torch.equal(box, nearest)
        assert record["index"] == 1000 + number
        assert record["label_name"] == CLASSES[number]
        assert record["prediction_name"] == CLASSES[cells[number].prediction]


def test_grid_scale_columns_and_meta_are_honoured(tmp_path):
    images = random_images(5, 3, 96)
    cells = [Cell(index=i, label=0, source=f"img_{i}.jpg") for i in range(5)]
    sidecar = json.loads(save_grid(tmp_path / "big.png", images, cells, CLASSES, columns=2, meta={"epoch": 3}).read_text())
    assert sidecar["scale"] == 1
    assert sidecar["meta"] == {"epoch": 3}
    assert [cell["source"] for cell in sidecar["cells"]] == [f"img_{i}.jpg" for i in range(5)]
    lefts = {cell["box"][0] for cell in sidecar["cells"]}
    assert len(lefts) == 2  # two columns
    explicit = json.loads(save_grid(tmp_path / "x4.png", images[:1, :, :8, :8], cells[:1], CLASSES, scale=4).read_text())
    left, top, right, bottom = explicit["cells"][0]["box"]
    assert (right - left, bottom - top) == (32, 32)


def test_class_names_are_drawn_below_each_cell(tmp_path):
    images = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
    cells = [Cell(index=0, label=3), Cell(index=1, label=5, prediction=3, confidence=0.9)]
    sidecar = json.loads(save_grid(tmp_path / "labels.png", images, cells, CLASSES).read_text())
    sheet = read_rgb(tmp_path / "labels.png")
    for record in sidecar["cells"]:
        left, top, right, bottom = record["box"]
        strip = sheet[bottom + 2 : bottom + 16, left:right]
        assert len(torch.unique(strip.reshape(-1, 3), dim=0)) > 2, "the text strip below a cell is empty"
    assert [cell["label_name"] for cell in sidecar["cells"]] == ["cat", "dog"]
    assert sidecar["cells"][1]["prediction_name"] == "cat"


def test_correct_and_wrong_cells_are_framed_in_different_colours(tmp_path):
    images = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
    cells = [Cell(index=0, label=1, prediction=1, confidence=0.9), Cell(index=1, label=1, prediction=2, confidence=0.9)]
    sidecar = json.loads(save_grid(tmp_path / "marks.png", images, cells, CLASSES).read_text())
    sheet = read_rgb(tmp_path / "marks.png")
    frames = [tuple(sheet[cell["box"][1] - 1, cell["box"][0] - 1].tolist()) for cell in sidecar["cells"]]
    assert frames[0] != frames[1]
    assert frames[0][1] > frames[0][0] and frames[1][0] > frames[1][1]  # green-ish, red-ish


def test_grid_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        save_grid(tmp_path / "a.png", torch.zeros(1, 3, 4, 4), [Cell(0, 0)], CLASSES)
    with pytest.raises(ValueError, match="cells"):
        save_grid(tmp_path / "a.png", torch.zeros(2, 3, 4, 4, dtype=torch.uint8), [Cell(0, 0)], CLASSES)
    assert not list(tmp_path.iterdir())


def test_confusion_matrix_matches_a_double_loop():
    generator = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 7, (500,), generator=generator)
    preds = torch.randint(0, 7, (500,), generator=generator)
    expected = torch.zeros(7, 7, dtype=torch.int64)
    for true in range(7):
        for predicted in range(7):
            expected[true, predicted] = sum(int(a == true and b == predicted) for a, b in zip(labels.tolist(), preds.tolist()))
    matrix = confusion_matrix(labels, preds, 7)
    assert matrix.dtype == torch.int64 and torch.equal(matrix, expected)
    with pytest.raises(ValueError):
        confusion_matrix(torch.tensor([7]), torch.tensor([0]), 7)


def test_per_class_accuracy_gives_zero_for_empty_classes():
    matrix = torch.tensor([[3, 1, 0], [0, 0, 0], [2, 0, 2]])
    assert per_class_accuracy(matrix) == [0.75, 0.0, 0.5]


def test_precision_recall_and_f1_per_class():
    # rows true, columns predicted: class 0 is found 8 of 10 times; 2 of class 1 are called 0
    matrix = torch.tensor([[8, 2, 0], [2, 6, 2], [0, 0, 0]])
    zero, one, empty = class_reports(matrix, ["a", "b", "c"])
    assert (zero.support, zero.correct, zero.predicted) == (10, 8, 10)
    assert zero.precision == pytest.approx(0.8) and zero.recall == pytest.approx(0.8) and zero.f1 == pytest.approx(0.8)
    assert one.precision == pytest.approx(6 / 8) and one.recall == pytest.approx(0.6)
    assert one.f1 == pytest.approx(2 * 0.75 * 0.6 / 1.35)
    assert (empty.support, empty.precision, empty.recall, empty.f1) == (0, 0.0, 0.0, 0.0)  # never NaN


def test_confusion_png_and_sidecar(tmp_path):
    matrix = torch.tensor([[8, 2], [1, 9]])
    sidecar = json.loads(save_confusion(tmp_path / "confusion.png", matrix, ["cat", "dog"], title="test").read_text())
    assert sidecar["matrix"] == [[8, 2], [1, 9]]
    assert sidecar["classes"] == ["cat", "dog"]
    assert sidecar["per_class_accuracy"] == [0.8, 0.9]
    sheet = read_rgb(tmp_path / "confusion.png")
    left, top, right, bottom = sidecar["boxes"][0][1]
    assert right > left and bottom > top and sheet.shape[1] >= right and sheet.shape[0] >= bottom
    corner = sheet[top, left].tolist()  # 2 of 10 confused: a light red, not white
    assert corner[0] > corner[1] and corner != [255, 255, 255]


def test_confusion_png_for_a_hundred_classes(tmp_path):
    generator = torch.Generator().manual_seed(2)
    labels = torch.randint(0, 100, (3000,), generator=generator)
    matrix = confusion_matrix(labels, labels, 100)
    sidecar = json.loads(save_confusion(tmp_path / "c100.png", matrix, [f"class {i}" for i in range(100)]).read_text())
    assert len(sidecar["boxes"]) == 100 and (tmp_path / "c100.png").stat().st_size > 0


def make_predictions() -> Predictions:
    probs = torch.tensor(
        [
            [0.9, 0.1, 0.0],  # right, confident
            [0.2, 0.7, 0.1],  # wrong (true 0), 0.7
            [0.1, 0.1, 0.8],  # wrong (true 1), 0.8
            [0.5, 0.4, 0.1],  # right, unsure
            [0.3, 0.6, 0.1],  # wrong (true 0), 0.6
        ]
    )
    labels = torch.tensor([0, 0, 1, 0, 0])
    losses = -probs[torch.arange(5), labels].log()
    return Predictions(probs=probs, preds=probs.argmax(1), labels=labels, losses=losses)


def test_top_losses_puts_confidently_wrong_first_then_highest_loss():
    pred = make_predictions()
    assert top_losses(pred, 3).tolist() == [2, 1, 4]
    assert top_losses(pred, 5).tolist() == [2, 1, 4, 3, 0]  # right ones by loss after the wrong ones


def test_confusion_cell_writes_only_the_matching_images(tmp_path):
    pred = make_predictions()
    images = random_images(5, 3, 16)
    classes = ["cat", "dog/wolf", "car"]
    path = save_confusion_cell(tmp_path, images, pred, 0, 1, classes, split_indices=[10, 11, 12, 13, 14])
    assert path == tmp_path / "confusion_cat_as_dog-wolf.png" and path.exists()
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert [cell["index"] for cell in sidecar["cells"]] == [11, 14]  # most confident first
    assert all(cell["label"] == 0 and cell["prediction"] == 1 for cell in sidecar["cells"])
    assert confusion_cell_indices(pred, 0, 1).tolist() == [1, 4]
    assert save_confusion_cell(tmp_path, images, pred, 2, 0, classes) is None


def test_predict_uses_eval_mode_and_restores_training():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Dropout(0.5), torch.nn.Linear(4 * 6 * 6, 3),
    )
    model[1].running_mean.fill_(0.3)
    model[1].eval()  # a deliberately frozen BatchNorm must stay frozen afterwards
    images, labels = random_images(20, 3, 8), torch.randint(0, 3, (20,))
    running_mean = model[1].running_mean.clone()

    first = predict(model, images, labels, CIFAR_MEAN, CIFAR_STD, device="cpu", batch_size=7)
    second = predict(model, images, labels, CIFAR_MEAN, CIFAR_STD, device="cpu", batch_size=20)
    assert model.training and not model[1].training and model[4].training
    assert torch.equal(model[1].running_mean, running_mean)
    assert torch.allclose(first.probs, second.probs, atol=1e-6) and torch.equal(first.preds, second.preds)
    model.eval()
    with torch.no_grad():
        logits = model(normalize(images, CIFAR_MEAN, CIFAR_STD))
    assert torch.allclose(first.probs, logits.softmax(1), atol=1e-6)
    assert torch.allclose(first.losses, torch.nn.functional.cross_entropy(logits, labels, reduction="none"), atol=1e-5)
    assert first.probs.dtype == torch.float32 and first.preds.dtype == torch.int64


def test_a_long_class_name_never_cuts_the_confidence(tmp_path):
    from workbench.core.inspection import grids

    cell = grids.Cell(0, 0, prediction=1, confidence=0.97)
    line = grids._strip_lines(cell, ["a", "a class name far too long to fit in one card"])[1]
    main_text, _, kept = line.partition("\t")
    font = grids._font(grids.TEXT_PX)
    fitted = grids._fit(main_text, font, 100 - font.getlength(kept)) + kept
    assert fitted.endswith("(97%)") and "…" in fitted


def test_the_confusion_legend_always_fits(tmp_path):
    from workbench.core.inspection import grids

    grids.save_confusion(tmp_path / "c.png", torch.tensor([[3, 1], [0, 4]]), ["x", "y"])
    with Image.open(tmp_path / "c.png") as image:
        assert image.width >= 2 * grids.MARGIN_PX + grids._legend_width(grids._font(grids.TEXT_PX))


def test_the_tiles_of_a_grid_read_back_as_the_exact_images_with_what_was_said_of_them(tmp_path):
    from workbench.core.inspection.tiles import has_tiles, read_tiles

    images = random_images(6, 3, 20, seed=7)
    cells = [Cell(index=40 + i, label=i, prediction=(i + i % 2) % 10, confidence=0.5 + i / 20, source=f"/photos/{i}.png")
             for i in range(6)]
    save_grid(tmp_path / "grid.png", images, cells, CLASSES, title="exact")
    assert has_tiles(tmp_path / "grid.png") and not has_tiles(tmp_path / "nothing.png")
    tiles = read_tiles(tmp_path / "grid.png")
    assert len(tiles) == 6
    for number, tile in enumerate(tiles):
        assert (tile.width, tile.height) == (20, 20)
        assert torch.equal(torch.frombuffer(bytearray(tile.rgb), dtype=torch.uint8).view(20, 20, 3).permute(2, 0, 1),
                           images[number])  # every pixel as the model was given it
        assert tile.source == f"/photos/{number}.png" and tile.label == CLASSES[number] and tile.index == 40 + number
    assert tiles[1].describe() == f"true {CLASSES[1]} · split index 41 · predicted {CLASSES[2]} 55.0% (wrong)"
    (tmp_path / "grid.json").write_text(json.dumps({"scale": 2, "cell_size": [20, 20], "cells": [{"box": [9999, 0]}]}))
    with pytest.raises(WorkbenchError, match="lies outside grid.png"):
        read_tiles(tmp_path / "grid.png")
