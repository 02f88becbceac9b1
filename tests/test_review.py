"""Inspection of a trained run: confusion drill-down, model and data set summaries, MC dropout."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn

from workbench.core.data.load import load_dataset
from workbench.core.export.predict import probabilities
from workbench.core.inspection.review import load_review
from workbench.core.inspection.summary import (
    dataset_summary,
    model_summary,
    save_sample_grid,
)
from workbench.core.models import count_parameters, create
from workbench.core.training.engine import fit


@pytest.fixture(scope="module")
def review(tmp_path_factory, data_dir):
    from workbench.core.config import RunConfig

    config = RunConfig.from_mapping(dict(
        dataset="shapes", arch="basic_cnn", epochs=1, batch_size=128, device="cpu",
        data_dir=str(data_dir), runs_dir=str(tmp_path_factory.mktemp("review-runs")), augment="none",
    ))
    return load_review(fit(config, lambda event: None))


def test_confusion_counts_match_a_direct_computation(review):
    matrix = review.confusion()
    labels, preds = review.predictions.labels, review.predictions.preds
    for t in range(10):
        for p in range(10):
            assert matrix[t, p] == int(((labels == t) & (preds == p)).sum())
    epochs = [json.loads(l) for l in (review.run_dir / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in epochs if r["type"] == "epoch"][-1]
    assert last["test_acc"] == pytest.approx(float(matrix.diag().sum()) / matrix.sum().item())


def test_drilling_into_a_cell_writes_exactly_its_images(review):
    matrix = review.confusion()
    off = matrix.clone().fill_diagonal_(0)
    t, p = divmod(int(off.argmax()), 10)
    png = review.write_cell(t, p)
    sidecar = json.loads(png.with_suffix(".json").read_text())
    assert len(sidecar["cells"]) == min(int(matrix[t, p]), 64)
    assert all(c["label"] == t and c["prediction"] == p for c in sidecar["cells"])
    assert png.name.startswith("confusion_") and "_as_" in png.name


def test_model_summary_lists_layers_with_shapes_and_params():
    model = create("basic_cnn", 3, 10, 32)
    rows = model_summary(model, 3, 32)
    assert rows[0].kind == "Conv2d" and rows[0].output_shape == (8, 28, 28)
    assert rows[-1].output_shape == (10,)
    assert sum(r.params for r in rows) == count_parameters(model) == 62_958
    assert model.training  # the summary leaves the caller's mode alone


def test_dataset_summary_and_raw_sample_grid(data_dir, tmp_path):
    data = load_dataset("shapes", data_dir=data_dir)
    summary = dataset_summary(data)
    assert sum(summary.train_counts) == len(data.train) and len(summary.classes) == 10
    png = save_sample_grid(tmp_path / "samples.png", data, per_class=4)
    cells = json.loads(png.with_suffix(".json").read_text())["cells"]
    assert len(cells) == 40 and [c["label"] for c in cells[:4]] == [0, 0, 0, 0]


class DropoutNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(12, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 4))

    def forward(self, x):
        return self.body(x)


def test_mc_dropout_single_plain_pass_equals_predict_and_many_passes_spread():
    torch.manual_seed(0)
    model = DropoutNet()
    images = torch.randn(5, 3, 2, 2)
    with torch.inference_mode():
        plain = model.eval()(images).softmax(1)
    mean, std = probabilities(model, images, passes=0)
    assert torch.equal(mean, plain) and torch.equal(std, torch.zeros_like(std))
    mean, std = probabilities(model, images, passes=30)
    assert float(std.max()) > 0.01
    assert torch.allclose(mean.sum(1), torch.ones(5), atol=1e-5)
    assert not model.training and not model.body[3].training  # dropout back in eval mode
