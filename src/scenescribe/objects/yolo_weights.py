"""Load ultralytics ``.pt`` checkpoints without running code from them.

A ``.pt`` file is a pickle: loaded in full (as ultralytics does by default) it can run any
command. Here the file is read once and unpickled with ``torch.load(weights_only=True)``; the
only globals allowed beyond torch's own are model classes (``nn.Module`` subclasses defined in
``torch.nn.modules`` or ``ultralytics.nn``), the small data types official checkpoints hold, and a
``getattr`` limited to the bound ``forward``/``forward_fuse`` methods fused models pickle. A file
that needs anything else is refused with its list. The checked checkpoint is then handed to
ultralytics in place of its own loader, so the file is never unpickled a second time.
"""

from __future__ import annotations

import contextlib
import enum
import importlib
import io
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scenescribe.errors import ModelNotFoundError, ScenescribeError
from scenescribe.release_assets import file_sha256

if TYPE_CHECKING:
    from scenescribe.registry import ModelEntry

_MODEL_MODULES = ("torch.nn.modules.", "ultralytics.nn.")
_FORWARDS = frozenset({"forward", "forward_fuse"})
NO_PICKLE_SUFFIXES = frozenset({".tflite", ".onnx"})
_lock = threading.Lock()  # torch's allow-list and ultralytics' loader are process-wide


class UnsafeCheckpointError(ModelNotFoundError):
    """The weights file would need code outside the model classes to load."""


def _restricted_getattr(obj: Any, name: str) -> Any:
    """``getattr`` as fused checkpoints use it (``conv.forward = conv.forward_fuse``), nothing else."""
    import pickle

    import torch

    if isinstance(obj, torch.nn.Module) and name in _FORWARDS:
        return getattr(type(obj), name).__get__(obj)
    if (isinstance(obj, type) and not name.startswith("_")
            and issubclass(obj, (torch.nn.Module, enum.Enum))):
        return getattr(obj, name)
    raise pickle.UnpicklingError(f"getattr({type(obj).__name__}, {name!r}) is not allowed")


def _allowed(name: str) -> Any | None:
    """The object a checkpoint's global ``name`` may resolve to, or ``None`` to refuse it."""
    import numpy as np
    import torch

    module, _, attr = name.rpartition(".")
    if name in ("builtins.getattr", "__builtin__.getattr"):
        return _restricted_getattr
    if name in ("pathlib.PosixPath", "pathlib.WindowsPath", "pathlib._local.PosixPath",
                "pathlib._local.WindowsPath"):
        return Path  # training paths in train_args: plain data
    if name in ("numpy.dtype", "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar"):
        return np.dtype if attr == "dtype" else np.float64(0).__reduce__()[0]
    if name.endswith(".IterableSimpleNamespace") and module in ("ultralytics.utils",
                                                               "ultralytics.yolo.utils"):
        from ultralytics.utils import IterableSimpleNamespace

        return IterableSimpleNamespace
    if not f"{module}.".startswith(_MODEL_MODULES):
        return None
    try:
        obj = getattr(importlib.import_module(module), attr, None)
    except ImportError:
        return None
    if isinstance(obj, type) and issubclass(obj, torch.nn.Module) and obj.__module__ == module:
        return obj
    return None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict of an ultralytics ``.pt`` file, unpickled with ``weights_only=True``."""
    import pickle

    import torch

    path = Path(path)
    serialization = torch.serialization
    if not hasattr(serialization, "get_unsafe_globals_in_checkpoint"):
        raise UnsafeCheckpointError(f"{path}: loading .pt weights safely needs torch >= 2.6 "
                                    f"(found {torch.__version__})")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelNotFoundError(f"{path}: cannot read the weights: {exc.strerror or exc}") from None
    try:
        needed = serialization.get_unsafe_globals_in_checkpoint(io.BytesIO(data))
    except Exception as exc:  # not a torch zip archive (a legacy or damaged file)
        raise ModelNotFoundError(f"{path}: not a PyTorch checkpoint ({type(exc).__name__})") from None
    allow = {name: _allowed(name) for name in needed}
    refused = sorted(name for name, obj in allow.items() if obj is None)
    if refused:
        raise UnsafeCheckpointError(
            f"{path}: refused: loading it would run code outside torch/ultralytics model classes "
            f"({', '.join(refused[:5])}{', ...' if len(refused) > 5 else ''})")
    entries: list[Any] = [(obj, name) for name, obj in allow.items()]
    with _lock, serialization.safe_globals(entries):
        try:
            ckpt = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            reason = str(exc).splitlines()[0][:160]
            raise UnsafeCheckpointError(f"{path}: refused by the safe loader: {reason}") from None
        except Exception as exc:
            raise ModelNotFoundError(f"{path}: cannot load the weights ({type(exc).__name__}: "
                                     f"{str(exc)[:120]})") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("ema") or ckpt.get("model"),
                                                     torch.nn.Module):
        raise ModelNotFoundError(f"{path}: not an ultralytics checkpoint (no model in it)")
    return ckpt


@contextlib.contextmanager
def checked_loading(path: str | Path) -> Iterator[None]:
    """While open, ultralytics loads ``path`` from the checked checkpoint, never by unpickling.

    TFLite and ONNX files hold no pickle and pass through; other suffixes are refused.

    ultralytics (8.3 and 8.4) reads every ``.pt`` through ``ultralytics.nn.tasks.torch_safe_load``;
    it is swapped for one returning the checkpoint ``load_checkpoint`` made.
    """
    from ultralytics.nn import tasks

    suffix = Path(path).suffix.lower()
    if suffix in NO_PICKLE_SUFFIXES:
        yield  # ultralytics reads these formats without unpickling anything
        return
    if suffix != ".pt":
        raise UnsafeCheckpointError(f"{path}: expected a .pt checkpoint (or "
                                    f"{', '.join(sorted(NO_PICKLE_SUFFIXES))}), found "
                                    f"{suffix or 'no suffix'}")
    ckpt = load_checkpoint(path)
    if not hasattr(tasks, "torch_safe_load"):
        raise UnsafeCheckpointError(f"{path}: this ultralytics version loads weights in a way "
                                    f"scenescribe cannot make safe; use ultralytics 8.3 or 8.4")

    def from_checked(weight: Any, *args: Any, **kwargs: Any) -> tuple[dict[str, Any], str]:
        if Path(weight).resolve() != Path(path).resolve():
            raise UnsafeCheckpointError(f"{weight}: unexpected second weights file while loading "
                                        f"{path}")
        return ckpt, str(weight)

    with _lock:
        original = tasks.torch_safe_load
        tasks.torch_safe_load = from_checked
        try:
            yield
        finally:
            tasks.torch_safe_load = original


def weights_file(entry: ModelEntry, path: Path) -> Path:
    """The ``.pt`` file itself, or the one inside a folder (a hub snapshot)."""
    if path.is_file():
        return path
    named = path / f"{entry.name}.pt"
    found = [named] if named.is_file() else sorted(path.glob("*.pt"))
    if len(found) != 1:
        raise ModelNotFoundError(f"{entry.name}: expected {named.name} in {path}, found "
                                 f"{[p.name for p in found] or 'no .pt file'}")
    return found[0]


def pin_facts(entry: ModelEntry, resolve: Callable[[], Path]) -> dict[str, Any]:
    """The pinned digest, and the digest of the weights used (a local copy may differ)."""
    if not entry.sha256:
        return {}
    facts: dict[str, Any] = {"sha256": entry.sha256}
    try:
        digest = file_sha256(resolve())
    except (OSError, ScenescribeError):
        return facts  # facts never fail a run; the load reports a missing file
    return {**facts, "weights_sha256": digest, "weights_match_pin": digest == entry.sha256}
