"""The base every model backend shares: its registry entry, options, device and weights."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from scenescribe.phases import PhaseClock
from scenescribe.registry import ModelEntry, resolve_weights
from scenescribe.switch_interval import short_switches

log = logging.getLogger("scenescribe.backend")

# What in a load is not safe from two threads at once runs under process-wide locks:
# * imports (``_IMPORT_LOCK``): transformers' lazy modules race (two threads importing at once
#   can see a half-built module: "cannot import name 'ASTForAudioClassification'");
# * builds (``_BUILD_LOCK``): transformers' ``from_pretrained`` sets torch's process-wide
#   default dtype, swaps ``PreTrainedModel.tie_weights`` for a no-op and patches
#   ``torch.nn.init`` and ``torch.linspace`` while it builds, restoring each on exit. Two builds
#   at once make modules in each other's dtype (measured on the H200: random Whisper large-v3 in
#   fp16 beside AST failed with "expected scalar type BFloat16 but found Half") and can leave
#   the patches in place for good (two saves and restores interleaved). TransNetV2's
#   constructor seeds the random generators and turns on deterministic mode.
# A load's imports hold the import lock alone (``importing``). ``exclusive`` holds both (the
# import lock first, always). A backend with ``side_by_side`` holds it only around such
# sections; the rest of its load (tokenizers, feature extractors, the CUDA context, YOLO's whole
# load) overlaps the others'. Any other backend's build runs under both. A backend whose load
# imports nothing lazily (``lazy_imports`` False: no transformers) imports with no lock and
# builds under the build lock alone, beside other loads' imports: the shot detector's 0.3 s
# load used to wait out Whisper's 9-20 s import of transformers, and with it the first shots
# (W1 on the H200: in 23 of 25 runs they ended 0.7-1.5 s after Whisper's load, the CPUs nearly
# idle for the 5-6 s before: ``benchmarks/results/h200-2026-12-04-r``; until 2026-12-04w the
# imports held both locks, so the split alone did not free it); the tracker's YOLO imports
# ultralytics, which imports no transformers, in the same way.
_IMPORT_LOCK = threading.RLock()
_BUILD_LOCK = threading.RLock()
_held = threading.local()  # this thread's depth of ``exclusive`` holds


@contextlib.contextmanager
def builds_held_off() -> Iterator[None]:
    """No model build runs while this does. A build sets torch's process-wide default dtype
    (see ``_BUILD_LOCK``), so a library call beside it that makes tensors without naming a
    dtype gets the build's: W1 on the H200 with YOLO predicting beside LLaVA's load failed with
    "Got unsupported ScalarType BFloat16" (ultralytics' empty detections are
    ``torch.zeros`` in the default dtype). For short calls only: a build waits for them. Take it
    before any GPU hold (``gpu_share``), never inside one, and take no load lock inside it."""
    with _BUILD_LOCK:
        yield


def import_names(names: tuple[str, ...]) -> None:
    """Import ``"pkg.module"`` names; ``"pkg:Name"`` also resolves a lazily exported name (the
    attribute access is what makes transformers import the submodule behind it)."""
    for name in names:
        module, _, attr = name.partition(":")
        loaded = importlib.import_module(module)
        if attr:
            getattr(loaded, attr)


_warming: dict[str, threading.Thread] = {}  # per CUDA device, the thread creating its context
_WARMING_LOCK = threading.Lock()


def _touch(device: str) -> None:
    import torch

    torch.zeros(1, dtype=torch.float32, device=device)  # makes the CUDA context


def warm_device(device: str) -> None:
    """Start creating ``device``'s CUDA context on a thread of its own, once per process, so that
    it overlaps the imports that follow (transformers' take seconds)."""
    if not device.startswith("cuda"):
        return
    with _WARMING_LOCK:
        if device in _warming:
            return
        # Here, not in the new thread: a lazily importing load holds the import lock now.
        importlib.import_module("torch")

        def warm() -> None:
            with contextlib.suppress(Exception):  # ``ready_device`` raises it where needed
                _touch(device)

        _warming[device] = threading.Thread(target=warm, name=f"warm-{device}", daemon=True)
        _warming[device].start()


def ready_device(device: str) -> None:
    """The CUDA context exists when this returns: a ``from_pretrained`` that touched CUDA first
    would make it while holding the process locks. Waits for ``warm_device``'s thread."""
    if device.startswith("cuda"):
        thread = _warming.get(device)
        if thread is not None:
            thread.join()
        _touch(device)


def load_pretrained(backend: Backend, model_class: Any, path: Path | str, dtype: Any,
                    **kwargs: Any) -> Any:
    """``model_class.from_pretrained(path)`` in ``dtype``, in eval mode on ``backend.device``.

    The weights go straight to the device when accelerate can place them (no CPU copy, then a
    second copy); only the ``from_pretrained`` call holds the process locks (``exclusive``: it may
    import lazily too).
    """
    placed = backend.device != "cpu" and importlib.util.find_spec("accelerate") is not None
    if placed:
        kwargs["device_map"] = {"": backend.device}
    with backend.exclusive():
        model = model_class.from_pretrained(path, dtype=dtype, **kwargs)
    return (model if placed else model.to(backend.device)).eval()


@contextlib.contextmanager
def torch_threads_kept() -> Iterator[None]:
    """Put back the calling thread's torch thread count if the block changed it.

    CTranslate2 (faster-whisper) calls ``omp_set_num_threads(cpu_threads)`` on the thread that
    builds a model, and once torch is imported that symbol binds to torch's OpenMP runtime (its
    libgomp is loaded globally). The count is per thread, so that thread's torch work (later
    stages, later runs in the process) ran on one thread on two cores: TransNetV2 over a 212 s
    clip took 157 s instead of 104. Without torch imported there is nothing to keep.
    """
    torch: Any = sys.modules.get("torch")
    get = getattr(torch, "get_num_threads", None)  # None while another thread imports it
    before = get() if get is not None else None
    try:
        yield
    finally:
        if get is not None and get() != before:
            torch.set_num_threads(before)


def resolve_device(device: str) -> str:
    """``auto`` becomes ``cuda`` when torch sees a GPU, else ``cpu``; others pass through."""
    if device != "auto":
        return device
    import os
    import sys

    if importlib.util.find_spec("torch") is None:
        return "cpu"
    if "torch" not in sys.modules and not os.path.exists("/proc/driver/nvidia/version"):
        return "cpu"  # no NVIDIA driver: skip importing torch (~600 MB, seconds) just to ask
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class Backend:
    """A loadable model. Subclasses implement ``_load`` and may override ``unload``.

    ``load`` is idempotent; ``unload`` frees the model (stage-major lifetimes: load, run over
    every video, free, load the next).
    """

    # Options that change only speed or what else the run does, never this backend's output.
    SPEED_OPTIONS: tuple[str, ...] = ("batch_size", "api_concurrency", "threads", "workers",
                                      "models", "cache", "use_cache", "max_batch",
                                      "adaptive_batch")
    # What ``_load`` imports (see ``import_names``), under the import lock.
    load_imports: ClassVar[tuple[str, ...]] = ()
    # True: ``_load`` takes ``exclusive`` around every section that touches process-wide state
    # (``load_pretrained`` does), so the rest of it may overlap other loads. False: the whole
    # load runs under the process-wide locks.
    side_by_side: ClassVar[bool] = False
    # False: nothing in the load imports lazily (no transformers): its imports take no lock and
    # a load that is not ``side_by_side`` holds only the build lock, never waiting for another
    # load's imports.
    lazy_imports: ClassVar[bool] = True
    # True: its stage may run it for several videos at once from threads (``videos_at_once``).
    concurrent_videos: ClassVar[bool] = False

    def __init__(self, entry: ModelEntry, options: Any, device: str = "cpu",
                 model_dir: Path | None = None) -> None:
        self.entry = entry
        self.options = options
        self.device = device
        self.model_dir = model_dir
        self.model: Any = None
        # Seconds of the last load: imports, waiting for and holding the process locks, total.
        self.load_timing: dict[str, float] = {}

    @property
    def name(self) -> str:
        return self.entry.name

    def weights(self) -> Path | str:
        """Local weights path (or hub id) following the registry's resolution order."""
        explicit = getattr(self.options, "weights", None)
        return resolve_weights(self.entry, path=explicit, model_dir=self.model_dir)

    def cache_key(self) -> dict[str, Any]:
        """This backend's identity: name, checkpoint, revision and the options that change its
        output (``SPEED_OPTIONS`` and the run's list of models are left out)."""
        from scenescribe.options import to_dict

        options = {k: v for k, v in to_dict(self.options).items() if k not in self.SPEED_OPTIONS}
        return {"backend": self.entry.name, "checkpoint": self.entry.checkpoint,
                "revision": self.entry.revision, "options": options}

    def facts(self) -> dict[str, Any]:
        """Model facts for the run file."""
        return {"name": self.entry.name, "checkpoint": self.entry.checkpoint,
                "revision": self.entry.revision, "device": self.device}

    @property
    def loaded(self) -> bool:
        return self.model is not None

    def load(self) -> None:
        if self.model is not None:
            return
        # Per backend: two threads asking for one model load it once. dict.setdefault is atomic.
        with self.__dict__.setdefault("_own_load_lock", threading.Lock()):
            if self.model is not None:
                return
            # Imports and from_pretrained give the interpreter lock up at every read: beside a
            # busy thread each such wait lasts a switch interval (``switch_interval``).
            with short_switches():
                self._timed_load()

    def _timed_load(self) -> None:
        start = time.perf_counter()
        self.load_timing = {"wait_s": 0.0, "exclusive_s": 0.0}
        clock = PhaseClock()  # the device's start-up and the imports, each apart
        if not self.lazy_imports:
            self._load_without_lazy_imports(start, clock)
            return
        # The imports under the import lock alone: a build of a backend that imports
        # nothing lazily (the shot network) goes on beside transformers' import.
        with self.importing():
            self._warm_and_import(clock)
        with (contextlib.nullcontext() if self.side_by_side else self.exclusive()), \
                torch_threads_kept():
            self.model = self._load()
        self.load_timing["load_s"] = time.perf_counter() - start

    def _load_without_lazy_imports(self, start: float, clock: PhaseClock) -> None:
        """``load`` for a backend whose imports need no lock: they run beside other loads'
        imports; a build that is not ``side_by_side`` holds the build lock alone."""
        self._warm_and_import(clock)
        with (contextlib.nullcontext() if self.side_by_side else self.building()), \
                torch_threads_kept():
            self.model = self._load()
        self.load_timing["load_s"] = time.perf_counter() - start

    def _warm_and_import(self, clock: PhaseClock) -> None:
        """The device's start-up (``side_by_side`` loads) and ``_imports``, each timed with its
        thread's CPU seconds and context switches into ``load_timing`` (``device_*``,
        ``imports_*``): an import that takes many times its CPU seconds waited for the cores
        or the interpreter lock (on a slow H200 host Whisper's took 24-28 s, ``-04-x/b``)."""
        if self.side_by_side:
            # Timed where there is a device to start (a CUDA context: seconds on a busy host).
            with (clock.phase("device") if self.device != "cpu" else contextlib.nullcontext()):
                warm_device(self.device)
        with clock.phase("imports"):
            self._imports()
        self.load_timing.update(clock.seconds())

    def exclusive(self) -> contextlib.AbstractContextManager[None]:
        """Hold both process-wide load locks (see ``_IMPORT_LOCK``); the outermost hold adds
        its wait and its time held to ``load_timing``."""
        return self._holding(_IMPORT_LOCK, _BUILD_LOCK)

    def importing(self) -> contextlib.AbstractContextManager[None]:
        """Hold the import lock alone (a load's imports), timed as ``exclusive``."""
        return self._holding(_IMPORT_LOCK)

    def building(self) -> contextlib.AbstractContextManager[None]:
        """Hold the build lock alone (a build that imports nothing lazily), timed as
        ``exclusive``."""
        return self._holding(_BUILD_LOCK)

    @contextlib.contextmanager
    def _holding(self, *locks: threading.RLock) -> Iterator[None]:
        outer = not getattr(_held, "depth", 0)
        owned: set[int] = _held.__dict__.setdefault("owned", set())
        if id(_BUILD_LOCK) in owned and id(_IMPORT_LOCK) not in owned:
            # A load nested in a build that took the build lock alone (the shot ensemble
            # loading its hsvcut half) is part of that build: taking the import lock now would
            # invert the order against a lazy load holding it and waiting for the build lock.
            locks = tuple(lock for lock in locks if lock is not _IMPORT_LOCK)
        asked = time.perf_counter()
        with contextlib.ExitStack() as stack:
            for lock in locks:  # always in ``_IMPORT_LOCK``, ``_BUILD_LOCK`` order
                stack.enter_context(lock)
                if id(lock) not in owned:
                    owned.add(id(lock))
                    stack.callback(owned.discard, id(lock))
            got = time.perf_counter()
            _held.depth = getattr(_held, "depth", 0) + 1
            try:
                yield
            finally:
                _held.depth -= 1
                if outer:
                    timing = self.load_timing
                    timing["wait_s"] = timing.get("wait_s", 0.0) + got - asked
                    timing["exclusive_s"] = (timing.get("exclusive_s", 0.0)
                                             + time.perf_counter() - got)

    def _imports(self) -> None:
        """Import what ``_load`` needs (``load_imports``), under the import lock unless
        ``lazy_imports`` is False."""
        import_names(self.load_imports)

    def _load(self) -> Any:
        return True

    def unload(self) -> None:
        self.model = None
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()

    def __enter__(self) -> Backend:
        self.load()
        return self

    def __exit__(self, *exc: object) -> None:
        self.unload()
