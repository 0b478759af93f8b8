"""The caption engine's batching: the throughput tuner's choice (fake clock, no GPU), the
prefetch slot (preparation of batch k+1 overlaps generation of batch k), and a tiny real model
on the CPU whose captions are the same with preprocessing overlapped or not."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from scenescribe import registry
from scenescribe.captions.base import CaptionRequest
from scenescribe.captions.batching import DEFAULT_KNEE, SWITCH_MARGIN, BatchTuner, Prefetcher, knee
from scenescribe.captions.engine import run_batches
from scenescribe.options import CaptionOptions
from scenescribe.progress import NullProgress
from scenescribe.records import Caption


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class FakeModel:
    """``generate_prepared`` advances a fake clock by ``cost(batch size)`` seconds."""

    name = "fake"

    def __init__(self, clock: FakeClock, cost: Callable[[int], float],
                 oom_above: int | None = None) -> None:
        self.clock, self.cost, self.oom_above = clock, cost, oom_above
        self._batch_cap: int | None = None
        self.sizes: list[int] = []
        self.warmed: list[int] = []

    def prepare(self, batch: Sequence[CaptionRequest]) -> Any:
        return [r.index for r in batch]

    def generate_prepared(self, batch: Sequence[CaptionRequest],
                          inputs: Any) -> list[tuple[int, Caption]]:
        import torch

        assert inputs == [r.index for r in batch]  # the inputs prepared for this very batch
        self.sizes.append(len(batch))
        if self.oom_above is not None and len(batch) > self.oom_above:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        self.clock.t += self.cost(len(batch))
        return [(r.index, Caption(f"scene {r.index}", 1)) for r in batch]

    def warm(self, batch: Sequence[CaptionRequest], inputs: Any) -> None:
        self.warmed.append(len(batch))

    def free_memory(self) -> None:
        pass


def requests(n: int) -> list[CaptionRequest]:
    return [CaptionRequest(i, (f"{i}.jpg",)) for i in range(n)]


def drive(cost: Callable[[int], float], scenes: int, size: int = 64,
          oom_above: int | None = None) -> tuple[FakeModel, BatchTuner, dict[int, Caption]]:
    clock = FakeClock()
    model = FakeModel(clock, cost, oom_above)
    tuner = BatchTuner.plan(size, scenes, adaptive=True, name="fake")
    out = dict(run_batches(model, requests(scenes), tuner, prefetch=False, clock=clock))
    assert sorted(out) == list(range(scenes))  # every scene once, whatever the batches
    return model, tuner, out


def test_tuner_keeps_the_larger_batch_when_it_is_faster_per_scene() -> None:
    # A decode step costs about the same at 32 and 64 scenes: 64 halves the time per scene.
    model, tuner, _ = drive(lambda n: 10.0 + 0.05 * n, scenes=300)
    assert model.sizes[:2] == [64, 32]  # the trials, largest first
    assert tuner.chosen == 64
    assert tuner.per_scene(64) == pytest.approx((10 + 3.2) / 64)
    assert set(model.sizes[2:-1]) == {64}  # the rest at the choice (the last batch: what is left)
    assert model.warmed == [64]  # one warm-up, at the first batch's shape


def test_tuner_picks_the_smaller_batch_when_the_larger_is_slower_per_scene() -> None:
    # Past the knee: the time per batch grows faster than the batch.
    model, tuner, _ = drive(lambda n: 0.002 * n * n, scenes=300)
    assert tuner.chosen == 32
    # Batch 3 was prepared while the 32 trial ran (before its time was known): at the best so
    # far, 64; from the fourth on, the choice.
    assert model.sizes[:3] == [64, 32, 64]
    assert set(model.sizes[3:-1]) == {32} and model.sizes[-1] <= 32


def test_a_small_gain_within_the_margin_keeps_the_larger_batch() -> None:
    per_scene_64 = 0.3
    slightly = per_scene_64 * (1 - SWITCH_MARGIN / 2)  # faster, but by less than the margin
    _, tuner, _ = drive(lambda n: n * (per_scene_64 if n == 64 else slightly), scenes=300)
    assert tuner.chosen == 64


def test_no_trials_without_enough_scenes_or_when_not_asked() -> None:
    assert BatchTuner.plan(64, 150, adaptive=True).sizes == [64]  # 64 + 32 + 64 > 150
    assert BatchTuner.plan(64, 500, adaptive=False).sizes == [64]
    assert BatchTuner.plan(64, 160, adaptive=True).sizes == [64, 32]
    model, tuner, _ = drive(lambda n: 1.0, scenes=100)
    assert tuner.chosen == 64 and model.sizes == [64, 36]


def test_out_of_memory_during_trials_caps_the_tuner() -> None:
    model, tuner, out = drive(lambda n: 0.01 * n, scenes=300, oom_above=40)
    assert model.sizes[0] == 64  # out of memory: halved to 32, the only candidate left
    assert tuner.chosen == 32 and set(model.sizes[1:-1]) == {32}
    assert model._batch_cap == 32
    assert all(c.error is None for c in out.values())


def test_knee_table_and_option() -> None:
    assert knee("llava-v1.6-mistral-7b", 0) == 64
    assert knee("some-unmeasured-family", 0) == DEFAULT_KNEE
    assert knee("llava-v1.6-mistral-7b", 24) == 24  # [captions] max_batch wins


def test_prefetch_prepares_the_next_batch_while_this_one_generates() -> None:
    spans: dict[str, list[tuple[float, float]]] = {"prepare": [], "generate": []}
    threads: set[str] = set()

    class Slow(FakeModel):
        def prepare(self, batch: Sequence[CaptionRequest]) -> Any:
            start = time.perf_counter()
            threads.add(threading.current_thread().name)
            time.sleep(0.15)
            spans["prepare"].append((start, time.perf_counter()))
            return super().prepare(batch)

        def generate_prepared(self, batch: Sequence[CaptionRequest], inputs: Any) -> Any:
            start = time.perf_counter()
            time.sleep(0.15)
            out = super().generate_prepared(batch, inputs)
            spans["generate"].append((start, time.perf_counter()))
            return out

    model = Slow(FakeClock(), lambda n: 0.0)
    start = time.perf_counter()
    stats: dict[str, float] = {}
    out = list(run_batches(model, requests(8), BatchTuner.fixed(2), prefetch=True, stats=stats))
    wall = time.perf_counter() - start
    # Where the time went: four calls of 0.15 s; only the first batch's preparation was waited
    # for in full (the others were prepared during the calls before them).
    assert stats["batches"] == 4 and stats["generate_s"] >= 4 * 0.15
    assert 0.15 <= stats["prepare_wait_s"] < 0.15 + 3 * 0.1
    assert [i for i, _ in out] == list(range(8))
    assert all(name.startswith("caption-prep") for name in threads)
    # Batch k+1's preparation overlaps batch k's generation.
    for (p0, p1), (g0, g1) in zip(spans["prepare"][1:], spans["generate"][:-1], strict=True):
        assert min(p1, g1) - max(p0, g0) > 0.1
    assert wall < 8 * 0.15 - 0.3  # 4 x (prepare + generate) one after another would be 1.2 s


def test_prefetch_slot_errors_and_discard() -> None:
    def prepare(item: int) -> int:
        if item < 0:
            raise ValueError("bad frame")
        return item * 2

    with Prefetcher(prepare) as slot:
        slot.submit(3)
        with pytest.raises(RuntimeError, match="slot is taken"):
            slot.submit(4)
        assert slot.result() == 6
        slot.submit(-1)
        with pytest.raises(ValueError, match="bad frame"):
            slot.result()
        slot.submit(-1)
        slot.discard()  # a discarded failure is no error
        slot.submit(5)
        assert slot.result() == 10
    inline = Prefetcher(prepare, enabled=False)
    inline.submit(2)
    assert inline.result() == 4


# ---- a tiny real model on the CPU ----------------------------------------------------------

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from scenescribe.testing.tiny import build_tiny  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> list[CaptionRequest]:
    from PIL import Image

    folder = tmp_path_factory.mktemp("frames")
    out = []
    for i in range(6):
        paths = []
        for j in range(2):
            path = folder / f"s{i}_{j}.jpg"
            Image.new("RGB", (48 + 8 * i, 40 + 6 * j), (30 * i, 200 - 20 * j, 90)).save(path)
            paths.append(str(path))
        out.append(CaptionRequest(i, tuple(paths), " ".join(["Speech: hello."] * (i % 3))))
    return out


@pytest.mark.parametrize("name", ["llava-v1.6-mistral-7b", "instructblip-vicuna-7b"])
def test_overlapped_preprocessing_gives_the_same_captions(
        name: str, tmp_path: Path, scenes: list[CaptionRequest],
        monkeypatch: pytest.MonkeyPatch) -> None:
    build_tiny(name, tmp_path)
    options = CaptionOptions(max_new_tokens=6, batch_size=2)
    captioner = registry.create(name, "captioner", options=options, device="cpu",
                                model_dir=tmp_path)
    captioner.load()
    assert captioner._prefetching() is False  # CPU default: nothing taken from generation
    plain = dict(captioner.caption(scenes, NullProgress()))

    prepared_on: set[str] = set()
    prepare = captioner.prepare

    def spy(batch: Any) -> Any:
        prepared_on.add(threading.current_thread().name)
        return prepare(batch)

    monkeypatch.setattr(captioner, "prepare", spy)
    monkeypatch.setattr(captioner, "prefetch", True)
    overlapped = dict(captioner.caption(scenes, NullProgress()))
    assert {n.split("_")[0] for n in prepared_on} == {"caption-prep"}
    assert overlapped == plain
    assert all(c.error is None and c.new_tokens > 0 for c in plain.values())
    assert len({c.text for c in plain.values()}) > 1  # the frames matter


def test_cpu_batch_choice_is_unchanged(tmp_path: Path) -> None:
    build_tiny("llava-v1.6-mistral-7b", tmp_path)
    captioner = registry.create("llava-v1.6-mistral-7b", "captioner", device="cpu",
                                model_dir=tmp_path,
                                options=CaptionOptions(max_batch=2, adaptive_batch=True))
    assert captioner.batch_size(500) == captioner.cpu_batch_size == 4  # max_batch: GPU only
    assert captioner._adaptive() is False
    captioner.options = dataclasses.replace(captioner.options, batch_size=3)
    assert captioner.batch_size(500) == 3


def test_warm_up_generate_stops_after_a_few_tokens(tmp_path: Path,
                                                   scenes: list[CaptionRequest]) -> None:
    """The CUDA warm-up's generate, run here on the CPU: real settings (a fixed output length
    of 8), stopped after 3 new tokens; the CPU path itself never warms up."""
    build_tiny("llava-v1.6-mistral-7b", tmp_path)
    captioner = registry.create("llava-v1.6-mistral-7b", "captioner", device="cpu",
                                model_dir=tmp_path,
                                options=CaptionOptions(max_new_tokens=8, min_new_tokens=8))
    captioner.load()
    inputs = captioner.prepare(scenes[:3])
    out = captioner.short_generate(inputs, 3)
    assert out.shape == (3, inputs["input_ids"].shape[1] + 3)
    captioner.warm(scenes[:3], inputs)
    assert captioner._warm_size == 0  # CPU: no warm-up
