"""Your own network: a Python file with a factory `(in_channels, num_classes, image_size) -> nn.Module`.

`--arch path/to/my_nets.py:make_net` runs that file's code, as `python my_nets.py` would: it is
the user's own file. A run keeps a copy (network/ in the run folder, with its sha256), so resume
and export build the network the run started with even after the original is edited or deleted.
Every mistake in the file is one line naming the file and the line.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.machinery
import importlib.util
import signal
import sys
import threading
import traceback
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from workbench.core.errors import WorkbenchError
from workbench.core.safe_read import MB, read_bytes

_LOADED: dict[tuple[str, str], object] = {}  # (path, sha256) -> module: each version runs once


def sha256_of(path: Path) -> str:
    return hashlib.sha256(read_bytes(path, 64 * MB)).hexdigest()  # a pipe given as the file: a sentence


def _where(path: Path, error: BaseException) -> str:
    """"my_nets.py line 12" for the deepest frame of the error inside the user's file."""
    if isinstance(error, SyntaxError) and error.lineno and Path(error.filename or "") == path:
        return f"{path} line {error.lineno}"
    lines = [frame.lineno for frame in traceback.extract_tb(error.__traceback__) if Path(frame.filename) == path]
    return f"{path} line {lines[-1]}" if lines else str(path)


def _short(error: BaseException) -> str:
    if isinstance(error, SystemExit):
        return f"the file called sys.exit({error.code!r})"
    text = error.msg if isinstance(error, SyntaxError) else str(error)
    first = (text.strip().splitlines() or [""])[0][:200]
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def load_factory(file: str, factory: str) -> Callable[..., nn.Module]:
    path = Path(file).expanduser()
    try:
        digest = sha256_of(path)
    except OSError as error:
        raise WorkbenchError(f"cannot read {path} ({error.strerror or error})") from None
    module = _LOADED.get((str(path), digest))
    if module is None:
        module = _run_file(path, digest)
        _LOADED[(str(path), digest)] = module
    found = getattr(module, factory, None)
    if found is None:
        defined = sorted(name for name, value in vars(module).items() if callable(value) and not name.startswith("_")
                         and getattr(value, "__module__", None) == module.__name__)
        listing = f" (it defines: {', '.join(defined)})" if defined else ""
        raise WorkbenchError(f"{path} has no {factory}{listing}")
    if not callable(found):
        raise WorkbenchError(f"{path}: {factory} is a {type(found).__name__}, not a function")
    return found


def _run_file(path: Path, digest: str):
    name = f"workbench_user_network_{digest[:16]}"
    spec = importlib.util.spec_from_file_location(name, path, loader=_SourceOnly(name, str(path)))
    if spec is None or spec.loader is None:
        raise WorkbenchError(f"{path} cannot be loaded as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look a class's module up here
    try:
        with _signal_handlers_kept():
            spec.loader.exec_module(module)
    except SyntaxError as error:
        sys.modules.pop(name, None)
        raise WorkbenchError(f"{_where(path, error)}: syntax error: {error.msg}") from None
    except (Exception, SystemExit) as error:  # the user's code: any failure is theirs to see, in one line
        sys.modules.pop(name, None)
        raise WorkbenchError(f"{_where(path, error)}: {_short(error)} while loading the file") from None
    return module


class _SourceOnly(importlib.machinery.SourceFileLoader):
    """Runs a network file from its source, never from a __pycache__ file (whose check is its
    mtime to the second and its size), and writes none beside it: the file may be the copy in a
    run folder (which an export that refuses must leave as it was) or in the user's tree."""

    def get_code(self, fullname: str):
        return self.source_to_code(self.get_data(self.path), self.path)


@contextlib.contextmanager
def _signal_handlers_kept():
    """Put back workbench's SIGINT/SIGTERM/SIGALRM handlers after the user's code ran: a file that
    ignores SIGTERM would otherwise leave a run that no stop request and no grace limit can end."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread handles signals (and only it can set a handler)
        return
    kept = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM)}
    try:
        yield
    finally:
        for sig, handler in kept.items():
            if handler is not None and signal.getsignal(sig) is not handler:
                signal.signal(sig, handler)


def build(file: str, factory: str, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """Call the factory; anything but an nn.Module (or an exception) is one line naming the file."""
    path = Path(file).expanduser()
    make = load_factory(file, factory)
    try:
        with _signal_handlers_kept():
            model = make(in_channels, num_classes, image_size)
    except (Exception, SystemExit) as error:
        raise WorkbenchError(f"{_where(path, error)}: {_short(error)} in {factory}"
                             f"({in_channels}, {num_classes}, {image_size})") from None
    if not isinstance(model, nn.Module):
        raise WorkbenchError(f"{path}: {factory} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def check_forward(model: nn.Module, file: str, in_channels: int, num_classes: int, image_size: int,
                  device: torch.device | str = "cpu") -> None:
    """Two blank images through the model in eval mode, then in train mode (no gradients; the
    running statistics and random state are put back): each must give (2, num_classes) logits.
    Leaves the model in train mode, as a fresh model is."""
    path = Path(file).expanduser()
    if not any(p.requires_grad for p in model.parameters()):
        raise WorkbenchError(f"{path}: the model has no trainable parameters")
    device = torch.device(device)
    buffers = {name: tensor.clone() for name, tensor in model.named_buffers()}
    for mode in ("eval", "train"):
        output = _forward_blank(model, path, mode, in_channels, image_size, device)
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        if shape != (2, num_classes):
            raise WorkbenchError(f"{path}: the model returned {shape} for 2 images in {mode} mode; it must return "
                                 f"(2, {num_classes}) logits, one per class")
    with torch.no_grad():
        for name, tensor in model.named_buffers():
            tensor.copy_(buffers[name])  # the train-mode pass moved BatchNorm's running statistics


def _forward_blank(model: nn.Module, path: Path, mode: str, in_channels: int, image_size: int, device):
    rng_devices = [device] if device.type == "cuda" else []
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=rng_devices, enabled=device.type != "meta"):
            model.train(mode == "train")
            return model(torch.zeros(2, in_channels, image_size, image_size, device=device))
    except (Exception, SystemExit) as error:
        raise WorkbenchError(f"{_where(path, error)}: {_short(error)} on a batch of 2 images of "
                             f"{in_channels}x{image_size}x{image_size} in {mode} mode") from None
    finally:
        model.train()


def failure_in(file: str, error: BaseException, doing: str) -> WorkbenchError:
    """The user's network failed while `doing` something: one line naming the file and line."""
    path = Path(file).expanduser()
    return WorkbenchError(f"{_where(path, error)}: {_short(error)} {doing}")


def where_in_user_code(error: BaseException) -> str | None:
    """"my_nets.py line 12" for the deepest frame of `error`'s traceback (or of the errors it
    was raised from) inside a network file this process loaded; None when no such frame exists."""
    files = {getattr(module, "__file__", None) for module in _LOADED.values()} - {None}
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        lines = [(frame.filename, frame.lineno) for frame in traceback.extract_tb(error.__traceback__)
                 if frame.filename in files]
        if lines:
            return f"{lines[-1][0]} line {lines[-1][1]}"
        error = error.__cause__ or error.__context__
    return None


def user_code_failure(error: BaseException, doing: str = "during training") -> WorkbenchError | None:
    """A failure inside the user's own network (a forward that breaks at batch N, say) as one line
    naming the file and line, or None when the user's code is not in the traceback: for the
    engine's catch-all, before it reports an exception as a bug."""
    where = where_in_user_code(error)
    return None if where is None else WorkbenchError(f"{where}: {_short(error)} {doing}")
