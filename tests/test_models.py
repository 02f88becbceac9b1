"""Tests for the model registry and architectures: counts, shapes, gradients and special layers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.support.cli import one_line_error
from workbench.cli import main
from workbench.core import models
from workbench.core.catalog import arch_names
from workbench.core.errors import WorkbenchError

SEED_COUNTS = {
    "linear": 30_730,
    "mlp": 123_330,
    "basic_cnn": 62_958,
    "convbn": 39_650,
    "deepbn": 462_570,
    "seed_resnet": 1_965_066,
    "deepbn_v2": 462_570,
    "seed_resnet_v2": 1_965_066,
}
CHEAP = ["linear", "mlp", "basic_cnn", "lenet5", "convbn", "deepbn", "speedrun"]
OWN = [name for name in models.names() if not name.startswith("tv:")]  # workbench's own: 28 px and up
PRETRAINED = [name for name in models.names() if name.startswith("tv:")]


def _forward_backward(name: str, channels: int, classes: int, size: int) -> None:
    torch.manual_seed(0)
    model = models.create(name, channels, classes, size)
    model.train()
    logits = model(torch.randn(2, channels, size, size))
    assert logits.shape == (2, classes)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()
    F.cross_entropy(logits, torch.tensor([0, classes - 1])).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", list(SEED_COUNTS))
def test_seed_parameter_counts_match_the_seed_documents(name):
    assert models.count_parameters(models.create(name, 3, 10, 32)) == SEED_COUNTS[name]


def _layer_kinds(model: torch.nn.Module) -> list[str]:
    """Leaf layers in forward order, with "+" where a residual sum closes."""
    kinds = []
    for module in model.children():
        if type(module).__name__ == "_Residual":
            kinds += ["res(", *_layer_kinds(module.block), ")+"]
        elif list(module.children()):
            kinds += _layer_kinds(module)
        else:
            kinds.append(type(module).__name__)
    return kinds


@pytest.mark.parametrize("name", ["convbn", "deepbn", "seed_resnet"])
def test_the_seed_models_have_no_activation_after_the_first_conv_and_bn_after_relu(name):
    kinds = _layer_kinds(models.create(name, 3, 10, 32))
    assert kinds[0] == "Conv2d" and kinds[1] == "Conv2d"  # conv5 straight into the first block
    body = [kind for kind in kinds if kind in ("Conv2d", "ReLU", "BatchNorm2d")][1:]
    assert body == ["Conv2d", "ReLU", "BatchNorm2d"] * (len(body) // 3)  # the seed's BnLayer order
    assert not models.has_dropout(models.create(name))  # the seed's Dropout2d is never called


def test_seed_resnet_residual_blocks_are_x_plus_bn_of_relu_of_conv():
    kinds = _layer_kinds(models.create("seed_resnet"))
    assert kinds.count("res(") == 8
    assert "res(,Conv2d,ReLU,BatchNorm2d,)+" in ",".join(kinds)
    block = models.create("seed_resnet")[2]  # the first residual block
    x = torch.randn(2, 32, 16, 16)
    assert torch.equal(block(x), x + block.block[2](torch.relu(block.block[0](x))))


@pytest.mark.parametrize("name", ["deepbn_v2", "seed_resnet_v2"])
def test_the_v2_models_keep_the_usual_order(name):
    kinds = _layer_kinds(models.create(name))
    assert kinds[:2] == ["Conv2d", "ReLU"]
    body = [kind for kind in kinds if kind in ("Conv2d", "ReLU", "BatchNorm2d")][2:]
    assert body == ["Conv2d", "BatchNorm2d", "ReLU"] * (len(body) // 3)


def test_every_family_is_registered_with_a_description():
    others = {"lenet5", "vgg11_bn", "nin", "resnet18", "shake_shake", "speedrun"}
    assert set(SEED_COUNTS) | others <= set(models.names())
    assert all(spec.description and "\n" not in spec.description for spec in models.specs())


def test_the_torch_free_catalog_lists_exactly_the_registered_models():
    assert arch_names() == models.names()
    with pytest.raises(ValueError, match="catalog"):
        models.register("not_in_the_catalog")


def test_resnet_sizes_match_the_published_cifar_models():
    assert models.count_parameters(models.create("resnet18")) == 11_173_962
    assert 2.85e6 < models.count_parameters(models.create("shake_shake")) < 2.95e6


@pytest.mark.parametrize("name", OWN)
def test_runs_on_grey_28px_images_with_7_classes(name):
    _forward_backward(name, channels=1, classes=7, size=28)


@pytest.mark.parametrize("name", OWN)
def test_runs_on_rgb_32px_images(name):
    _forward_backward(name, channels=3, classes=10, size=32)


@pytest.mark.parametrize("name", PRETRAINED)
def test_torchvision_networks_take_grey_and_colour_images_at_32px_with_any_class_count(name):
    _forward_backward(name, channels=1, classes=7, size=32)  # the RGB stem made grey
    _forward_backward(name, channels=3, classes=2, size=32)


def test_the_catalog_says_what_torchvision_says_of_each_pretrained_network():
    import torchvision.models

    for name in PRETRAINED:
        weights = torchvision.models.get_model_weights(name.removeprefix("tv:")).DEFAULT
        description = models.get_spec(name).description
        assert f"{weights.transforms().crop_size[0]} px" in description
        assert f"{weights.meta['_metrics']['ImageNet-1K']['acc@1']:.1f}% top-1" in description
        assert models.parameter_count(name, 3, 1000, 224) == weights.meta["num_params"]


def test_a_vit_at_a_size_that_is_not_a_multiple_of_its_patch_is_refused_in_words():
    from workbench.core.errors import ConfigError

    with pytest.raises(ConfigError, match="multiple of 16"):
        models.create("tv:vit_b_16", 3, 10, 40)


@pytest.mark.parametrize("name", CHEAP)
def test_runs_on_larger_images(name):
    _forward_backward(name, channels=3, classes=5, size=96)


def test_unknown_name_lists_the_choices():
    with pytest.raises(WorkbenchError) as info:
        models.create("no_such_net")
    assert "no_such_net" in str(info.value)
    assert all(name in str(info.value) for name in models.names())


def test_dropout_is_reported_only_where_present():
    assert models.has_dropout(models.create("vgg11_bn"))
    assert models.has_dropout(models.create("nin"))
    assert not models.has_dropout(models.create("convbn"))


def test_speedrun_whitening_decorrelates_patches_and_freezes_the_layer():
    torch.manual_seed(0)
    model = models.create("speedrun", 3, 10, 32)
    # Correlated channels, so whitening has something to undo.
    base = torch.randn(64, 1, 32, 32)
    mixed = 0.5 * base + 0.1 * torch.randn(64, 1, 32, 32)
    images = torch.cat([base, mixed, torch.randn(64, 1, 32, 32)], dim=1)
    model.init_whitening(images)

    layer = model.whiten
    assert not layer.weight.requires_grad
    with torch.no_grad():
        responses = layer(images)
    half = layer.out_channels // 2
    positive = responses[:, :half].transpose(0, 1).reshape(half, -1)
    assert torch.allclose(positive.mean(1), torch.zeros(half), atol=1e-4)
    covariance = torch.cov(positive)
    off_diagonal = covariance - torch.diag(covariance.diagonal())
    assert off_diagonal.abs().max() < 1e-3
    # eps damps the weakest directions a little below unit variance: lambda / (lambda + eps).
    assert ((covariance.diagonal() > 0.9) & (covariance.diagonal() < 1.0 + 1e-4)).all()
    # The second half repeats the first with the opposite sign, so GELU keeps both.
    assert torch.allclose(responses[:, half:], -responses[:, :half], atol=1e-5)


def test_speedrun_whitening_works_for_one_channel():
    torch.manual_seed(0)
    model = models.create("speedrun", 1, 3, 28)
    model.init_whitening(torch.randn(8, 1, 28, 28))
    assert model.whiten.weight.shape == (8, 1, 2, 2)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 3)


def test_shake_shake_is_deterministic_only_in_eval_mode():
    torch.manual_seed(0)
    model = models.create("shake_shake", 3, 10, 32)
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    model.train()
    with torch.no_grad():
        assert not torch.allclose(model(x), model(x))


def test_images_too_small_for_the_architecture_are_refused_before_a_run_folder(tmp_path, capsys):
    runs_dir = tmp_path / "runs"
    line = one_line_error(capsys, ["train", "--dataset", "shapes", "--arch", "basic_cnn", "--image-size", "8",
                                   "--device", "cpu", "--runs-dir", str(runs_dir), "--data-dir", str(tmp_path / "d")])
    assert "cannot take 8x8 images" in line and "at least 16 px" in line
    assert not runs_dir.exists() or not list(runs_dir.iterdir())
    assert "-5" not in str(main(["models", "--image-size", "-5"]))  # refused (exit 2), not drawn as 3x-5x-5
    assert "image-size" in capsys.readouterr().err


def test_a_list_asks_whether_a_network_fits_with_one_forward_pass_and_counts_that_model(monkeypatch):
    from workbench.core.models import registry

    passes = []
    real = registry._problem_at
    monkeypatch.setattr(registry, "_problem_at", lambda *args: passes.append(args[3]) or real(*args))
    monkeypatch.setattr(registry, "_FITS", {})
    monkeypatch.setattr(registry, "_PROBLEMS", {})
    monkeypatch.setattr(registry, "_COUNTED", {})
    assert not models.fits("basic_cnn", 3, 5, 9) and passes == [9]  # no search for the size that would fit
    assert models.fits("basic_cnn", 3, 5, 16) and passes == [9, 16]
    assert models.parameter_count("basic_cnn", 3, 5, 16) == models.count_parameters(models.create("basic_cnn", 3, 5, 16))
    assert passes == [9, 16]  # counted on the model the check built
    assert models.fits("basic_cnn", 3, 5, 9) is False and len(passes) == 2  # remembered
    said = models.input_problem("basic_cnn", 3, 5, 9)
    assert "at least 16 px" in said and passes[2:] == [9, *range(10, 17)]  # the sentence searches
    assert not models.fits("tv:vit_b_16", 3, 5, 20)  # the factory's own refusal: 20 px is not a multiple of 16
    assert "16 px patches" in models.input_problem("tv:vit_b_16", 3, 5, 20)
