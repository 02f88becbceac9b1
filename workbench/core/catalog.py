"""Every architecture's name and one-line description, without importing torch.

The factories live in `workbench.core.models`, which needs torch (seconds to import). Form
checks, `--help` and the TUI's first paint only need the names, so they read them from here;
`register` refuses a name missing from this list, and a test checks nothing here lacks a factory.
"""

ARCHITECTURES: dict[str, str] = {
    # The seed tutorials' six, with their exact parameter counts.
    "linear": "one Linear layer on the flattened pixels (multinomial logistic regression)",
    "mlp": "flattened pixels -> 40 hidden ReLU units -> classes",
    "basic_cnn": "conv5-pool-conv5-pool, 3 FC layers (the seed tutorial's CNN)",
    "lenet5": "LeNet-5: tanh conv5-avgpool x2 to 16x5x5, then FC 120-84 (LeCun 1998)",
    # As the seed wrote them: no activation after the first conv5, BN after the ReLU. The seed
    # defines a Dropout2d(0.2) per block but never calls it, so none has dropout (nor MC dropout).
    "convbn": "conv5, 3 stride-2 conv3-ReLU-BN blocks (10-20-40-80), global avg pool, FC",
    "deepbn": "conv5, 4 stages of 2 conv3-ReLU-BN blocks (20-40-80-160), global max pool, FC",
    "seed_resnet": "conv5, 4 stages of a stride-2 block + 2 residual x+BN(ReLU(conv)) blocks (32-256), max pool, FC",
    "deepbn_v2": "deepbn in the usual order: ReLU after conv5, conv3-BN-ReLU blocks (same parameters)",
    "seed_resnet_v2": "seed_resnet in the usual order: ReLU after conv5, x+ReLU(BN(conv)) blocks (same parameters)",
    # Classic CIFAR-sized networks.
    "vgg11_bn": "VGG-11 for small images: 8 conv3-BN-ReLU, 5 max pools, FC 512-512 with dropout 0.5",
    "nin": "Network in Network: 3 mlpconv blocks (conv + two 1x1), dropout, global avg pool, no FC",
    "resnet18": "ResNet-18 for CIFAR: 3x3 stem, no max pool, 4x2 basic blocks 64-512, avg pool, FC",
    "shake_shake": "Shake-Shake 26 2x32d: 3x4 two-branch blocks (32-64-128) mixed by random weights per sample",
    "speedrun": "airbench94-style: 2x2 patch-whitening conv, 3 conv groups 64-256-256, max pool, logits x 1/9",
    # Networks trained on ImageNet-1k (torchvision's weights, fetched once into torch's cache): the
    # start for your own photos (--recipe finetune). They take colour images; 224 px is their own size.
    "tv:resnet18": "ResNet-18 with ImageNet-1k weights (torchvision); 224 px, 69.8% top-1",
    "tv:resnet34": "ResNet-34 with ImageNet-1k weights (torchvision); 224 px, 73.3% top-1",
    "tv:resnet50": "ResNet-50 with ImageNet-1k weights (torchvision, V2); 224 px, 80.9% top-1",
    "tv:mobilenet_v3_small": "MobileNetV3-Small with ImageNet-1k weights (torchvision); 224 px, 67.7% top-1",
    "tv:mobilenet_v3_large": "MobileNetV3-Large with ImageNet-1k weights (torchvision, V2); 224 px, 75.3% top-1",
    "tv:efficientnet_b0": "EfficientNet-B0 with ImageNet-1k weights (torchvision); 224 px, 77.7% top-1",
    "tv:convnext_tiny": "ConvNeXt-Tiny with ImageNet-1k weights (torchvision); 224 px, 82.5% top-1",
    "tv:vit_b_16": "ViT-B/16 with ImageNet-1k weights (torchvision); 224 px (other sizes interpolate its grid), 81.1% top-1",
}

PRETRAINED_PREFIX = "tv:"  # an architecture that starts from trained weights unless --weights none


def is_pretrained(arch: str) -> bool:
    return arch.startswith(PRETRAINED_PREFIX) and arch in ARCHITECTURES


# Recipes: what a run's training looks like beyond the network. Which settings each reads is
# declared with the setting (RunConfig's `recipes=`), so the form can grey out the others.
RECIPES: dict[str, str] = {
    "standard": "the form's optimizer, learning rate, schedule and augmentation, evaluated every epoch",
    "speedrun": (
        "airbench94-style: Nesterov SGD per 1024 examples, BN biases x64, lookahead, alternating "
        "flips, test-time augmentation; evaluated after the last epoch (speedrun network only)"
    ),
    "finetune": (
        "from trained weights (a tv: network, --weights, --init-from): the head alone for --freeze-epochs, "
        "then every layer, the backbone at --backbone-lr-mult of the learning rate"
    ),
}


def recipe_names() -> list[str]:
    return list(RECIPES)


def arch_names() -> list[str]:
    return list(ARCHITECTURES)


# ---- your own network: `path/to/file.py:factory` --------------------------------------------

USER_ARCH_HINT = "or your own network as path/to/file.py:factory"


def parse_user_arch(arch: str) -> tuple[str, str] | None:
    """(file, factory) when `arch` names a Python file's factory, e.g. "nets/mine.py:make_net"."""
    file, colon, factory = arch.rpartition(":")
    if not colon or not file.endswith(".py") or not factory.isidentifier():
        return None
    return file, factory


def arch_label(arch: str) -> str:
    """A short name for tables and run folder names: "mine.make_net" for a file, else the name."""
    parsed = parse_user_arch(arch)
    if parsed is None:
        return arch
    file, factory = parsed
    return f"{file.replace(chr(92), '/').rsplit('/', 1)[-1][:-3]}.{factory}"
