"""The caption engine's loop: batches taken in order at the tuner's size, each prepared on a
CPU thread while the one before generates, timed, and halved on out-of-memory errors.

The captioner provides ``prepare(batch)`` (frames read, prompts built, processor outputs on the
CPU), ``generate_prepared(batch, inputs)`` (one ``generate`` call, decoded captions),
``warm(batch, inputs)`` (called once before the first batch), ``name`` and ``free_memory()``;
``TransformersCaptioner`` is the one user.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

from scenescribe.captions.base import CaptionRequest
from scenescribe.captions.batching import BatchTuner, Prefetcher, take
from scenescribe.records import Caption

log = logging.getLogger("scenescribe.captions")


class BatchedModel(Protocol):
    name: str
    _batch_cap: int | None

    def prepare(self, batch: Sequence[CaptionRequest]) -> Any: ...

    def generate_prepared(self, batch: Sequence[CaptionRequest],
                          inputs: Any) -> list[tuple[int, Caption]]: ...

    def warm(self, batch: Sequence[CaptionRequest], inputs: Any) -> None: ...

    def free_memory(self) -> None: ...


def _out_of_memory() -> type[BaseException]:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is what every transformers captioner runs on
        return MemoryError
    return torch.cuda.OutOfMemoryError


def run_batches(model: BatchedModel, requests: Sequence[CaptionRequest], tuner: BatchTuner,
                prefetch: bool, clock: Callable[[], float] = time.perf_counter,
                stats: dict[str, float] | None = None) -> Iterator[tuple[int, Caption]]:
    """Caption ``requests`` (already in batch order) batch by batch; yields ``(index, caption)``.

    Out of memory: the batch is put back and retried at half the size (the cap holds for the
    rest, and for later calls through ``model._batch_cap``); a scene that fails alone gets an
    error caption. A preparation error (an unreadable frame) propagates, as before. ``stats``
    (if given) adds up where the time went: ``prepare_wait_s`` (waiting for a batch's CPU
    preparation), ``generate_s`` (the model's calls, out-of-memory ones included), ``batches``.
    """
    oom = _out_of_memory()
    pending = list(requests)
    first = True
    spent = stats if stats is not None else {}
    for key in ("prepare_wait_s", "generate_s", "batches"):
        spent.setdefault(key, 0.0)
    with Prefetcher(model.prepare, prefetch) as slot:
        size = tuner.next_size()
        batch = take(pending, size)
        slot.submit(batch)
        while batch:
            asked = clock()
            inputs = slot.result()
            spent["prepare_wait_s"] += clock() - asked
            if first:
                model.warm(batch, inputs)
                first = False
            next_size = tuner.next_size() if pending else 0
            upcoming = take(pending, next_size)
            if upcoming:
                slot.submit(upcoming)  # prepared while this batch generates
            start = clock()
            try:
                results = model.generate_prepared(batch, inputs)
                error = ""
            except oom as exc:
                results, error = None, str(exc).split("\n")[0][:200]
            del inputs
            took = clock() - start
            spent["generate_s"] += took
            spent["batches"] += 1
            if results is not None:
                tuner.record(size, len(batch), took)
                yield from results
                batch, size = upcoming, next_size
                continue
            # Out of memory, outside the except block: the traceback no longer pins tensors.
            slot.discard()
            pending[:0] = upcoming
            model.free_memory()
            if len(batch) == 1:
                log.warning("%s: scene %d out of memory alone: %s", model.name, batch[0].index,
                            error)
                yield batch[0].index, Caption("", 0, error=f"out of memory at batch size 1: "
                                                          f"{error}")
            else:
                half = (len(batch) + 1) // 2
                model._batch_cap = half
                tuner.limit(half)
                log.warning("%s: out of memory at batch size %d; retrying at %d", model.name,
                            len(batch), half)
                pending[:0] = batch
            size = tuner.next_size()
            batch = take(pending, size)
            if batch:
                slot.submit(batch)
