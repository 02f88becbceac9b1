"""A model's state as safetensors bytes plus JSON extra state, or one sentence saying why it cannot be.

Whatever trains should export: tied (shared) weights, non-contiguous tensors and views are
copied into tensors of their own; a module's `get_extra_state()` goes into model.json when it
is JSON-like, or into the weights when it is a tensor. What a bundle cannot hold without pickle
(an object from get_extra_state, a quantized or sparse tensor, a dtype safetensors lacks) is
refused here, in memory, before anything is written.
"""

from __future__ import annotations

import json
from typing import Any

import torch
import torch.nn as nn

from workbench.core.errors import WorkbenchError

EXTRA_STATE_KEY = "extra_state"  # in model.json: {state_dict key: JSON value}


def pack(model: nn.Module, metadata: dict[str, str]) -> tuple[bytes, dict[str, Any]]:
    """(safetensors bytes, JSON extra state) for the model's state_dict."""
    from safetensors.torch import save

    tensors: dict[str, torch.Tensor] = {}
    extra: dict[str, Any] = {}
    for key, value in model.state_dict().items():
        if isinstance(value, torch.Tensor):
            tensors[key] = _own_copy(key, value)
        else:
            extra[key] = _json_like(key, value)
    try:
        return save(tensors, metadata=metadata), extra
    except Exception:  # noqa: BLE001 - safetensors raises several types; find the tensor to name
        for key, tensor in tensors.items():
            try:
                save({key: tensor})
            except Exception as error:  # noqa: BLE001
                raise _refusal(f"{key} holds {tensor.dtype} values, which safetensors cannot store "
                               f"({_first_line(error)})") from None
        raise


def unpack(weights: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """The state_dict to load: the weights and model.json's extra state."""
    extra = meta.get(EXTRA_STATE_KEY) or {}
    return {**weights, **extra}


def extra_state_problem(meta: dict[str, Any]) -> str:
    """What is wrong with model.json's extra state, or ""."""
    extra = meta.get(EXTRA_STATE_KEY, {})
    if not isinstance(extra, dict) or not all(key.endswith("_extra_state") for key in extra):
        return f"{EXTRA_STATE_KEY} must map *_extra_state keys to values"
    return ""


def _own_copy(key: str, tensor: torch.Tensor) -> torch.Tensor:
    if tensor.is_quantized:
        raise _refusal(f"{key} is a quantized tensor ({tensor.dtype}), which safetensors cannot store; "
                       "export the float model before quantizing it")
    if tensor.layout != torch.strided:
        raise _refusal(f"{key} is a {str(tensor.layout).removeprefix('torch.')} tensor; store it dense "
                       "(tensor.to_dense()) in the network")
    # A copy of its own: tied weights share storage and a view may cover a larger tensor, and
    # safetensors refuses both; every key then loads its own equal copy.
    return tensor.detach().to("cpu", copy=True).contiguous()


def _json_like(key: str, value: Any) -> Any:
    try:
        text = json.dumps(value, allow_nan=False)
        same = json.loads(text) == value
    except (TypeError, ValueError, RecursionError):
        same = False
    if not same:
        raise _refusal(f"{key} (from get_extra_state) is a {type(value).__name__} that JSON cannot hold as it is; "
                       "return a tensor, or dicts, lists, strings and numbers, from get_extra_state")
    return value


def _refusal(why: str) -> WorkbenchError:
    return WorkbenchError(f"cannot export this network: {why}; nothing was written")


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0].strip() if text else type(error).__name__)[:160]
