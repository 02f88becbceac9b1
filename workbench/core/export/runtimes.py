"""A bundle's model as a function from a normalised batch to logits, in any format it holds:
safetensors (the network rebuilt from model.json), model.pt2 (torch.export's program) or
model.onnx (onnxruntime). Only the safetensors network can run a user's own Python file; the
pt2 and onnx files are graphs, so they need no trust in the bundle's maker."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import torch

from workbench.core.errors import WorkbenchError
from workbench.core.export.loading import load_bundle

FORMATS = ("safetensors", "pt2", "onnx")
FILES = {"pt2": "model.pt2", "onnx": "model.onnx"}


def format_runner(name: str, export_dir: Path, trust_code: bool = False, device: torch.device | None = None
                  ) -> Callable[[torch.Tensor], torch.Tensor]:
    """Logits of a batch through the bundle's `name` format (refused in one sentence when the
    bundle does not hold it or its runtime is not installed)."""
    if name not in FORMATS:
        raise WorkbenchError(f"--format: {name!r} is not one of {', '.join(FORMATS)}")
    if name == "safetensors":
        model, _ = load_bundle(export_dir, trust_code)
        target = device or torch.device("cpu")
        model = model.eval().to(target)
        return lambda batch: model(batch.to(target))
    path = Path(export_dir) / FILES[name]
    if not path.is_file():
        raise WorkbenchError(f"{export_dir} has no {FILES[name]}; export it with `workbench export RUN --format {name}`")
    if name == "pt2":
        logger = logging.getLogger("torch.export")
        was, logger.disabled = logger.disabled, True
        try:
            program = torch.export.load(str(path)).module()
        except Exception as error:  # noqa: BLE001 - a file torch cannot load back is one sentence
            raise WorkbenchError(f"{path} cannot be loaded by torch.export ({type(error).__name__}); "
                                 "export the run again") from None
        finally:
            logger.disabled = was
        return lambda batch: program(batch.cpu())
    try:
        import onnxruntime
    except ImportError:
        raise WorkbenchError("running model.onnx needs onnxruntime: pip install -e '.[onnx]'") from None
    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as error:  # noqa: BLE001 - onnxruntime's own errors: a damaged or foreign file
        raise WorkbenchError(f"{path} is not a model onnxruntime can run ({str(error).splitlines()[0][:200]})") from None
    input_name = session.get_inputs()[0].name
    return lambda batch: torch.from_numpy(session.run(None, {input_name: batch.cpu().numpy()})[0])
