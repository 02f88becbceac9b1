"""Device choice, seeding and precision: the hardware facts a run depends on."""

from __future__ import annotations

import contextlib
import os
import random

import torch

from workbench.core.errors import ConfigError


def pick_device(requested: str) -> tuple[torch.device, list[str]]:
    """The device to train on, plus notices about fallbacks. auto: cuda, then mps, then cpu."""
    notices: list[str] = []
    if requested == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                "device",
                "cuda: no CUDA GPU is visible (torch.cuda.is_available() is False); use cpu or auto",
            )
        return torch.device("cuda"), notices
    if requested == "mps":
        if not _mps_available():
            raise ConfigError("device", "mps: Apple's MPS backend is not available here; use cpu or auto")
        return torch.device("mps"), notices
    if requested == "cpu":
        return torch.device("cpu"), notices
    if torch.cuda.is_available():
        return torch.device("cuda"), notices
    if _mps_available():
        return torch.device("mps"), notices
    notices.append("no GPU found: training on the CPU")
    return torch.device("cpu"), notices


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple GPU (MPS)"
    threads = torch.get_num_threads()
    return f"CPU ({threads} thread{'' if threads == 1 else 's'})"


def seed_everything(seed: int) -> None:
    """Seed Python, torch's CPU generator and every GPU's."""
    random.seed(seed)
    torch.manual_seed(seed)  # also seeds all CUDA devices
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for a precision setting, or None for plain fp32."""
    if precision == "fp32":
        return None
    if precision == "fp16" and device.type == "cpu":
        raise ConfigError("precision", "fp16 needs a GPU; use bf16 or fp32 on the CPU")
    return torch.bfloat16 if precision == "bf16" else torch.float16


def autocast_context(device: torch.device, dtype: torch.dtype | None):
    """Mixed precision is explicit: None (fp32) runs without autocast."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def gpu_memory_mb(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20
