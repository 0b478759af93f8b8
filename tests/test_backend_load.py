"""Backend loads: what runs under the process lock, what overlaps, and real models loaded from
threads at once keeping the dtype each asked for (see backend.py)."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import MODELS, make_tiny_ast
from scenescribe import registry
from scenescribe.backend import _BUILD_LOCK, _IMPORT_LOCK, Backend
from scenescribe.options import SoundOptions, SpeechOptions
from scenescribe.registry import ModelEntry

LOAD_S = 0.4


class Timed(Backend):
    """Records when its imports, its load and its exclusive section ran, and whether the lock
    was held during the load."""

    def __init__(self, name: str, imports: tuple[str, ...], side_by_side: bool = False,
                 lazy_imports: bool = True) -> None:
        super().__init__(ModelEntry(name=name, kind="sounds", target="x:X", extra=""), None)
        self.load_imports = imports
        self.side_by_side = side_by_side
        self.lazy_imports = lazy_imports
        self.spans: dict[str, tuple[float, float]] = {}
        self.locked_during_load: bool | None = None
        self.imports_locked_during_load: bool | None = None
        self.loads = 0

    def _imports(self) -> None:
        start = time.perf_counter()
        super()._imports()
        time.sleep(0.05)  # an import that takes a while: two must not interleave
        self.spans["imports"] = (start, time.perf_counter())

    def _load(self) -> Any:
        start = time.perf_counter()
        self.locked_during_load = _BUILD_LOCK._is_owned()  # type: ignore[attr-defined]
        self.imports_locked_during_load = _IMPORT_LOCK._is_owned()  # type: ignore[attr-defined]
        time.sleep(LOAD_S)  # reading weights, building a tokenizer
        # A from_pretrained call; a load that imports nothing lazily holds the build lock only.
        with self.exclusive() if self.lazy_imports else self.building():
            begun = time.perf_counter()
            time.sleep(0.05)
            self.spans["exclusive"] = (begun, time.perf_counter())
        self.loads += 1
        self.spans["load"] = (start, time.perf_counter())
        return object()


def _load_together(*backends: Backend) -> list[BaseException]:
    """Load each backend from its own thread, all released at once; the errors raised."""
    barrier = threading.Barrier(len(backends))
    errors: list[BaseException] = []

    def load(backend: Backend) -> None:
        barrier.wait()
        try:
            backend.load()
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=load, args=(b,)) for b in backends]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> float:
    return min(a[1], b[1]) - max(a[0], b[0])


def test_side_by_side_loads_overlap_but_imports_and_exclusive_sections_do_not() -> None:
    a = Timed("a", ("json",), side_by_side=True)
    b = Timed("b", ("collections:OrderedDict",), side_by_side=True)
    assert not _load_together(a, b)
    assert a.loaded and b.loaded
    assert _overlap(a.spans["load"], b.spans["load"]) > LOAD_S / 2
    assert _overlap(a.spans["imports"], b.spans["imports"]) <= 0
    assert _overlap(a.spans["exclusive"], b.spans["exclusive"]) <= 0
    assert a.locked_during_load is False and b.locked_during_load is False
    for backend in (a, b):  # the load's own account of where its time went
        timing = backend.load_timing
        assert timing["load_s"] >= LOAD_S
        assert timing["exclusive_s"] >= 0.1  # the imports' hold and the section's
        # The imports timed (a CPU backend has no device start-up to time).
        phases = {f"imports_{k}" for k in ("s", "cpu_s", "blocked", "preempted")}
        assert set(timing) == {"wait_s", "exclusive_s", "load_s", *phases}
        # The imports (a sleep here) waited: their thread used little CPU and gave it up.
        assert timing["imports_s"] >= 0.05 and timing["imports_cpu_s"] < timing["imports_s"] / 2
        if sys.platform == "linux":
            assert timing["imports_blocked"] >= 1


def test_other_backends_load_whole_under_the_lock() -> None:
    a, b = Timed("a", ()), Timed("b", ("json",))
    assert not _load_together(a, b, Timed("c", (), side_by_side=True))
    assert _overlap(a.spans["load"], b.spans["load"]) <= 0
    assert a.locked_during_load is True and b.locked_during_load is True


def test_a_load_that_imports_nothing_lazily_waits_for_builds_not_imports() -> None:
    """The shot detector's build (``lazy_imports`` False) goes on while another load imports
    (Whisper's 9 s import of transformers held the first shots back), never beside a build."""
    importing = Timed("importing", ("json",), side_by_side=True)
    small = Timed("small", (), lazy_imports=False)
    released = threading.Event()
    holder = threading.Thread(target=lambda: (_IMPORT_LOCK.acquire(), released.wait(5),
                                              _IMPORT_LOCK.release()))
    holder.start()  # another load's long import
    time.sleep(0.05)
    start = time.perf_counter()
    small.load()
    assert time.perf_counter() - start < LOAD_S + 0.5  # it did not wait for the import
    assert small.locked_during_load is True and small.imports_locked_during_load is False
    released.set()
    holder.join()
    # A build in progress (the exclusive section of a side-by-side load) holds it back.
    later = Timed("later", (), lazy_imports=False)
    with _BUILD_LOCK:
        waiting = threading.Thread(target=later.load)
        waiting.start()
        time.sleep(0.3)
        assert not later.loaded
    waiting.join()
    assert later.loaded and later.load_timing["wait_s"] >= 0.1  # the build lock's hold
    # Beside a side-by-side load, its build never overlaps that load's exclusive section.
    again = Timed("again", (), lazy_imports=False)
    assert not _load_together(importing, again)
    assert _overlap(importing.spans["exclusive"], again.spans["load"]) <= 0


class Nesting(Timed):
    """A build that imports nothing lazily and loads a part that does (the shot ensemble
    loading its ``hsvcut`` half inside its own build)."""

    def __init__(self, part: Backend) -> None:
        super().__init__("nesting", (), lazy_imports=False)
        self.part = part

    def _load(self) -> Any:
        time.sleep(0.2)  # holding the build lock while another load takes the import lock
        self.part.load()
        return object()


def test_a_lazy_load_inside_a_build_never_deadlocks_with_another_load() -> None:
    """Locks taken in the other order (build, then import) against a lazy load (import, then
    build) would deadlock; a load nested in a build is part of that build."""
    nesting = Nesting(Timed("part", ("json",)))
    lazy = Timed("lazy", ("json",))
    threads = [threading.Thread(target=nesting.load, daemon=True)]
    threads.append(threading.Thread(target=lambda: (time.sleep(0.05), lazy.load()), daemon=True))
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads), "the two loads deadlocked"
    assert nesting.loaded and nesting.part.loaded and lazy.loaded


def test_one_backend_loaded_from_two_threads_loads_once() -> None:
    a = Timed("a", ("json",), side_by_side=True)
    assert not _load_together(a, a, a)
    assert a.loads == 1


def test_a_missing_module_fails_the_load() -> None:
    a = Timed("a", ("scenescribe_no_such_module",))
    with pytest.raises(ModuleNotFoundError):
        a.load()
    assert not a.loaded


def test_a_stage_is_charged_its_own_load_and_the_wait_for_another_apart() -> None:
    # The H200 run reported 12.7, 13.0 and 13.7 s for speech, sounds and objects: one load and
    # two that waited for it. A stage's load_s is now its own; the wait is load_wait_s.
    from scenescribe.stages import LazyLoad

    whole, beside = Timed("a", ()), Timed("b", ("json",), side_by_side=True)
    first, second = LazyLoad(whole), LazyLoad(beside)
    thread = threading.Thread(target=first)
    thread.start()
    time.sleep(0.1)  # ``whole`` holds the lock for its whole load, about 0.5 s
    second()
    thread.join()
    own = 0.05 + LOAD_S + 0.05  # imports, load, exclusive section
    assert second.wait_seconds >= 0.25
    assert own - 0.01 <= second.seconds <= own + 0.15
    timing = second.timing()
    assert (timing["load_s"], timing["load_wait_s"]) == (second.seconds, second.wait_seconds)
    assert {k for k in timing if k.startswith("load_imports")} == {
        "load_imports_s", "load_imports_cpu_s", "load_imports_blocked", "load_imports_preempted"}
    assert 0.05 <= timing["load_imports_s"] < second.seconds  # the lock's wait is not in it
    assert first.wait_seconds < 0.05 and first.seconds >= own


# --- real models: transformers' from_pretrained from threads at once -------------------------

WHISPER = MODELS / "whisper" / "hf-whisper-tiny.en"
ROUNDS = 6


@pytest.fixture(scope="module")
def tiny_ast(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-layer random AST folder (float32 weights)."""
    return make_tiny_ast(tmp_path_factory.mktemp("tiny-ast"))


def _whisper(compute_type: str) -> Any:
    options = SpeechOptions(backend="whisper-tiny.en", weights=str(WHISPER),
                            compute_type=compute_type)
    return registry.create("whisper-tiny.en", "speech", options=options, device="cpu")


def _ast(weights: Path) -> Any:
    options = SoundOptions(backend="ast-audioset", weights=str(weights))
    return registry.create("ast-audioset", "sounds", options=options, device="cpu")


def _dtypes(module: Any) -> set[Any]:
    return {p.dtype for p in module.parameters()} | {b.dtype for b in module.buffers()
                                                    if b.is_floating_point()}


@pytest.mark.slow
def test_real_models_loaded_side_by_side_keep_their_dtypes(tiny_ast: Path) -> None:
    # The file holds float32 weights; each Whisper asks for its own dtype and AST (on the CPU)
    # for float32. Built side by side without the lock, a model takes another load's default
    # dtype and its weights are cast to it; its output projection can also be left untied.
    import torch
    from transformers import PreTrainedModel

    for _ in range(ROUNDS):
        whispers = {dtype: _whisper(dtype) for dtype in ("bfloat16", "float16", "float32")}
        ast = _ast(tiny_ast)
        errors = _load_together(*whispers.values(), ast)
        assert not errors, errors
        for name, backend in whispers.items():
            net = backend.model.net
            assert _dtypes(net) == {getattr(torch, name)}, name
            assert net.proj_out.weight is net.model.decoder.embed_tokens.weight  # still tied
        assert _dtypes(ast.model.model) == {torch.float32}
        assert ast.side_by_side and all(w.side_by_side for w in whispers.values())
    # What from_pretrained patches process-wide while it builds is back as it was.
    assert torch.get_default_dtype() == torch.float32
    assert PreTrainedModel.tie_weights.__name__ == "tie_weights"
    assert torch.linspace.__name__ == "linspace"


def test_a_load_leaves_torchs_thread_count_as_it_found_it() -> None:
    """CTranslate2 sets its thread count on the loading thread with ``omp_set_num_threads``,
    which binds to torch's OpenMP runtime once torch is imported: unguarded, the thread's torch
    work then ran on ``cpu_threads()`` threads (one on two cores) for the rest of the process."""
    import torch

    from scenescribe.speech.faster_whisper import cpu_threads

    before = torch.get_num_threads()
    torch.set_num_threads(cpu_threads() + 1)  # not the count CTranslate2 is given
    try:
        recognizer = registry.create("faster-whisper-tiny.en", "speech", options=SpeechOptions(),
                                     device="cpu", model_dir=MODELS)
        recognizer.load()
        assert torch.get_num_threads() == cpu_threads() + 1
        recognizer.unload()
    finally:
        torch.set_num_threads(before)


class SlowImports(Timed):
    """A lazily importing load whose imports take a while (transformers' take 9-20 s)."""

    importing_now = threading.Event()

    def _imports(self) -> None:
        self.importing_now.set()
        super()._imports()
        time.sleep(1.0)
        self.spans["imports"] = (self.spans["imports"][0], time.perf_counter())


def test_a_build_that_imports_nothing_lazily_goes_on_during_another_loads_imports() -> None:
    """Through the real ``load``: the shot network's build (``lazy_imports`` False) does not wait
    for Whisper's import of transformers, only for builds."""
    slow = SlowImports("slow", ("json",), side_by_side=True)
    small = Timed("small", (), lazy_imports=False)
    loading = threading.Thread(target=slow.load)
    loading.start()
    assert slow.importing_now.wait(5)
    small.load()
    loading.join()
    assert small.spans["load"][1] < slow.spans["imports"][1]  # built during the imports
    assert small.locked_during_load is True and small.imports_locked_during_load is False
    assert _overlap(slow.spans["exclusive"], small.spans["exclusive"]) <= 0
    # A lazily importing load that is not side by side builds under both locks, imports apart.
    whole = Timed("whole", ("json",))
    whole.load()
    assert whole.locked_during_load is True and whole.imports_locked_during_load is True
