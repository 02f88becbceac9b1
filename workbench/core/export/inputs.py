"""What `predict` was given, as image files: files as they are, folders walked for images (the
extensions torchvision's ImageFolder reads, hidden files left out), and globs expanded here
(quoted, so the shell did not), in a stable order; what cannot be an image is named, not fatal."""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Sequence

from torchvision.datasets.folder import IMG_EXTENSIONS

from workbench.core.safe_read import is_regular

GLOB_CHARACTERS = "*?["


def image_paths(given: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """(image files in order, (what was given, why it gave none) for each that gave none)."""
    found: list[str] = []
    nothing: list[tuple[str, str]] = []
    for item in given:
        if not os.path.lexists(item) and any(c in item for c in GLOB_CHARACTERS):
            matches = sorted(glob.glob(os.path.expanduser(item), recursive=True))
            files = [match for match in matches if not os.path.isdir(match)]
            for folder in (match for match in matches if os.path.isdir(match)):
                files += _images_in(folder)
            if files:
                found += files
            else:
                nothing.append((item, "no file matches this pattern"))
        elif os.path.isdir(item):
            images = _images_in(item)
            if images:
                found += images
            else:
                nothing.append((item, f"no images in this folder ({' '.join(IMG_EXTENSIONS)})"))
        else:
            found.append(item)
    return list(dict.fromkeys(found)), nothing


def _images_in(folder: str) -> list[str]:
    images = []
    for root, folders, files in os.walk(folder):
        folders[:] = sorted(name for name in folders if not name.startswith("."))
        images += [str(Path(root) / name) for name in sorted(files)
                   if not name.startswith(".") and name.lower().endswith(IMG_EXTENSIONS)]
    return images


def unreadable_reason(path: str) -> str:
    """Why `path` cannot be opened as an image file before decoding ("" when it can be tried)."""
    if not os.path.lexists(path):
        return "does not exist"
    if not is_regular(path):
        return "is not a regular file (a folder, a pipe or a device)"
    return ""
