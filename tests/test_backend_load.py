"""Backend loads: imports and weights one at a time under the process lock (see backend.py)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from scenescribe.backend import _LOAD_LOCK, Backend
from scenescribe.registry import ModelEntry

LOAD_S = 0.4


class Timed(Backend):
    """Records when its imports and its weight load ran, and whether the lock was held."""

    def __init__(self, name: str, imports: tuple[str, ...]) -> None:
        super().__init__(ModelEntry(name=name, kind="sounds", target="x:X", extra=""), None)
        self.load_imports = imports
        self.spans: dict[str, tuple[float, float]] = {}
        self.locked_during_load: bool | None = None
        self.loads = 0

    def _imports(self) -> None:
        start = time.perf_counter()
        super()._imports()
        time.sleep(0.05)  # an import that takes a while: two must not interleave
        self.spans["imports"] = (start, time.perf_counter())

    def _load(self) -> Any:
        start = time.perf_counter()
        self.locked_during_load = _LOAD_LOCK._is_owned()  # type: ignore[attr-defined]
        time.sleep(LOAD_S)  # reading weights
        self.loads += 1
        self.spans["load"] = (start, time.perf_counter())
        return object()


def _load_together(*backends: Backend) -> None:
    threads = [threading.Thread(target=b.load) for b in backends]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> float:
    return min(a[1], b[1]) - max(a[0], b[0])


def test_weights_never_load_side_by_side() -> None:
    # from_pretrained sets torch's process-wide default dtype: two loads at once build each
    # other's modules in the wrong dtype, so named imports do not free the weight load.
    a, b = Timed("a", ("json",)), Timed("b", ("collections:OrderedDict",))
    _load_together(a, b)
    assert a.loaded and b.loaded
    assert _overlap(a.spans["load"], b.spans["load"]) <= 0
    assert _overlap(a.spans["imports"], b.spans["imports"]) <= 0
    assert a.locked_during_load is True and b.locked_during_load is True


def test_backend_naming_no_imports_loads_under_the_lock() -> None:
    a, b = Timed("a", ()), Timed("b", ())
    _load_together(a, b)
    assert _overlap(a.spans["load"], b.spans["load"]) <= 0
    assert a.locked_during_load is True and b.locked_during_load is True


def test_one_backend_loaded_from_two_threads_loads_once() -> None:
    a = Timed("a", ("json",))
    _load_together(a, a, a)
    assert a.loads == 1


def test_a_missing_module_fails_the_load() -> None:
    a = Timed("a", ("scenescribe_no_such_module",))
    with pytest.raises(ModuleNotFoundError):
        a.load()
    assert not a.loaded
