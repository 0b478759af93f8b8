"""One shared decode (and TransNetV2's decode in time segments) gives each detector exactly the
frames, scores and cuts of its own single pass."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import scenescribe
from conftest import media
from fake_media import head, make_clip
from fake_setup import fake_options
from scenescribe import registry
from scenescribe.errors import StageError
from scenescribe.media import iter_frames, probe
from scenescribe.options import ShotOptions
from scenescribe.progress import NullProgress
from scenescribe.shots.ensemble import combine
from scenescribe.shots.fast import opening_fade_end
from scenescribe.shots.segments import plan_segments
from scenescribe.shots.shared_decode import SharedDecode, decode_both
from scenescribe.shots.shrink import (
    SMALL_WIDTH,
    area_shrink,
    shrink_upright,
    small_rgb,
    small_size,
)
from scenescribe.shots.transnetv2 import network_input
from scenescribe.testing import fakes

BBB = "real/big_buck_bunny_0_30.webm"  # 720p, a fade-in and hard cuts
CAR = "real/intel_car-detection.mp4"  # 377 frames, 12.5 fps
SYNTH = "synthetic/synthetic_cuts_speech.mp4"  # 750 frames with hard cuts


def make(backend: str, workers: int = 1) -> Any:
    detector = registry.create(backend, "shots", options=ShotOptions(backend, workers=workers))
    detector.load()
    return detector


def _ignore(frames: float) -> None:
    pass


def _stream(decode: SharedDecode) -> list[tuple[float, np.ndarray]]:
    return list(decode.frames())


def test_decode_both_gives_each_detector_its_own_frames() -> None:
    """hsvcut gets the small RGB its own pass makes from the planes (or the planes, for another
    width); TransNetV2 that frame shrunk to 48x27."""
    path = media(BBB)
    planes = [(f.index, f.time, f.image) for f in
              iter_frames(path, pixel_format="yuv420p", start=10.0, end=12.0)]
    size = small_size(planes[0][2].shape[1], planes[0][2].shape[0] * 2 // 3, SMALL_WIDTH)
    assert size == (256, 144)
    both = list(decode_both(path, start=10.0, end=12.0))
    other_width = list(decode_both(path, start=10.0, end=12.0, hsv_width=128))
    assert len(both) == len(planes) == len(other_width) > 40
    for (frame, s), (frame_128, s_128), (index, time, image) in zip(both, other_width, planes,
                                                                     strict=True):
        assert (frame.index, frame.time) == (index, time) == (frame_128.index, frame_128.time)
        assert np.array_equal(frame.image, small_rgb(image, size))
        assert np.array_equal(frame_128.image, image)
        assert np.array_equal(s, network_input(small_rgb(image, size), 0))
        assert np.array_equal(s, s_128) and s.shape == (27, 48, 3)


def test_the_shrink_is_an_area_average() -> None:
    """Whole-number ratios take the box filter, others OpenCV's area filter: block means."""
    import cv2

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (720, 1280), dtype=np.uint8)
    fast = area_shrink(image, (256, 144))
    blocks = image.reshape(144, 5, 256, 5).mean(axis=(1, 3))
    assert np.abs(fast - blocks).max() <= 0.5 + 1e-9
    for size in ((256, 144), (128, 72), (256, 240), (160, 90)):  # 5x5, 10x10, 5x3, 8x8
        assert np.array_equal(area_shrink(image, size),
                              cv2.resize(image, size, interpolation=cv2.INTER_AREA)), size
    odd = area_shrink(image, (96, 54))  # 13.33x: OpenCV's weighted areas
    assert odd.shape == (54, 96) and abs(float(odd.mean()) - float(image.mean())) < 0.5
    rotated = shrink_upright(rng.integers(0, 256, (144, 256, 3), dtype=np.uint8), (48, 27), 90)
    assert rotated.shape == (27, 48, 3)


@pytest.mark.parametrize("clip", [BBB, CAR])
def test_segments_stitch_the_single_pass_frame_stream(clip: str) -> None:
    info = probe(media(clip))
    with SharedDecode(None, info, _ignore, workers=1) as one:
        assert not one.parallel
        single = _stream(one)
    # 4 s segments put seams in every few seconds of frames; each must join exactly.
    segments = plan_segments(info.duration, 16, min_seconds=4.0)
    with SharedDecode(None, info, _ignore, segments=segments) as split:
        assert split.parallel and len(segments) >= 4
        stitched = _stream(split)
    assert [t for t, _ in stitched] == [t for t, _ in single]
    assert len(single) == info.num_frames
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(stitched, single, strict=True))


def test_shared_hsvcut_cuts_equal_its_own_pass() -> None:
    info = probe(media(BBB))
    own = make("hsvcut").detect(info, NullProgress())
    assert own  # the clip has cuts: the comparison below is not of two empty lists
    segments = plan_segments(info.duration, 16, min_seconds=4.0)
    for kwargs in ({"workers": 1}, {"segments": segments}):
        with SharedDecode(make("hsvcut"), info, _ignore, **kwargs) as decode:  # type: ignore[arg-type]
            _stream(decode)
            assert decode.cuts() == own, kwargs


@pytest.mark.slow
def test_segmented_transnetv2_scores_and_the_ensemble_equal_one_pass(tmp_path: Path) -> None:
    """The network over the stitched stream scores every frame as over one pass (bit for bit),
    and ``transnetv2-hsvcut`` on one shared decode gives the cuts of its two old passes."""
    # The first 14 s (three segments, hard cuts at 4, 8 and 12.4 s): the network runs three
    # times, and on CPU the whole 30 s took 40 s.
    info = probe(head(media(SYNTH), tmp_path / "synthetic_head.mp4", seconds=14.0))
    tn = make("transnetv2")
    single = list(tn.frame_scores(info))  # workers=1: one pass in this process
    segments = plan_segments(info.duration, 16, min_seconds=4.0)
    with SharedDecode(None, info, _ignore, segments=segments) as split:
        assert split.parallel
        assert list(tn.frame_scores(info, frames=split.frames())) == single
    probs = np.array([p for p, _, _ in single], dtype=np.float32)
    hsv_cuts = make("hsvcut").detect(info, NullProgress())
    two_passes = combine(tn.cuts_from_scores(single), hsv_cuts, probs,
                         opening_fade_end(str(info.path)))
    assert len(two_passes) >= 3  # the clip's hard cuts: not a comparison of two empty lists
    assert make("transnetv2-hsvcut").detect(info, NullProgress()) == two_passes


def test_a_failing_segment_names_the_file(tmp_path: Any) -> None:
    info = probe(media(CAR))
    gone = replace(info, path=tmp_path / "gone.mp4")
    segments = plan_segments(info.duration, 16, min_seconds=4.0)
    with pytest.raises(StageError, match="gone.mp4: shot detection of 0-"):  # noqa: SIM117
        with SharedDecode(make("hsvcut"), gone, _ignore, segments=segments) as decode:
            _stream(decode)


def test_videos_at_once_follow_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    from scenescribe.stages import videos_at_once

    def shot_videos_at_once(detector: Any, videos: int) -> int:
        return videos_at_once(detector, videos, "SCENESCRIBE_SHOT_VIDEOS")

    gpu_default = registry.create("transnetv2-hsvcut", "shots",
                                  options=ShotOptions("transnetv2-hsvcut"))
    monkeypatch.delenv("SCENESCRIBE_SHOT_VIDEOS", raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert shot_videos_at_once(gpu_default, 4) == 1  # a 2-core machine: one at a time
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert shot_videos_at_once(gpu_default, 4) == 2
    assert shot_videos_at_once(gpu_default, 1) == 1
    assert shot_videos_at_once(make("adaptive"), 4) == 1  # not declared safe from threads
    monkeypatch.setenv("SCENESCRIBE_SHOT_VIDEOS", "3")
    assert shot_videos_at_once(gpu_default, 4) == 3


def test_shots_stage_runs_videos_side_by_side(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two videos at once give each its own scenes, as one after the other does."""
    threads: list[str] = []
    detect = fakes.FakeShots.detect

    def recording(self: Any, video: Any, progress: Any, spool: Any = None,
                  decoded: Any = None) -> Any:
        threads.append(threading.current_thread().name)
        return detect(self, video, progress, spool, decoded)

    monkeypatch.setattr(fakes.FakeShots, "detect", recording)
    monkeypatch.setattr(fakes.FakeShots, "concurrent_videos", True)
    clips = [make_clip(tmp_path / "in" / f"clip{k}.mp4", seconds=3 + k) for k in range(3)]
    got = {}
    for at_once in ("1", "2"):
        monkeypatch.setenv("SCENESCRIBE_SHOT_VIDEOS", at_once)
        out = tmp_path / at_once
        assert not scenescribe.run(clips, out, fake_options()).failed
        got[at_once] = [(out / c.stem / "scenes.jsonl").read_text() for c in clips]
    assert got["1"] == got["2"]
    assert len(set(got["1"])) == 3  # three different videos, not one copied
    # On threads either way: at one decode at a time, a decoded video's network goes on
    # beside the next video's decode.
    assert sum(name.startswith("shots-video") for name in threads) == 6


@pytest.mark.parametrize("gives_up", [True, False])
def test_a_decoded_video_gives_its_turn_to_decode_to_the_next(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gives_up: bool) -> None:
    """One video decodes at a time (``SCENESCRIBE_SHOT_VIDEOS=1``), but one whose decoders
    are done (``decoded``) lets the next start while it finishes; a backend that never says so
    keeps its turn to the end. The milestone is in the run's timeline."""
    started = {"clip0": threading.Event(), "clip1": threading.Event()}
    overlapped: list[bool] = []
    first: list[str] = []  # the video that got the turn first (threads may start either)
    order = threading.Lock()
    detect = fakes.FakeShots.detect

    def decoding(self: Any, video: Any, progress: Any, spool: Any = None,
                 decoded: Any = None) -> Any:
        name = Path(video.path).stem
        with order:
            holder = not first
            first.append(name)
        started[name].set()
        if holder:
            if gives_up:
                decoded()
                decoded()  # a second call gives nothing more away
            other = "clip1" if name == "clip0" else "clip0"
            overlapped.append(started[other].wait(10 if gives_up else 0.5))
        return detect(self, video, progress, spool)

    monkeypatch.setattr(fakes.FakeShots, "detect", decoding)
    monkeypatch.setattr(fakes.FakeShots, "concurrent_videos", True)
    monkeypatch.setenv("SCENESCRIBE_SHOT_VIDEOS", "1")
    clips = [make_clip(tmp_path / "in" / f"clip{k}.mp4", seconds=3) for k in range(2)]
    result = scenescribe.run(clips, tmp_path / "out", replace(fake_options(), parallel=True))
    assert not result.failed and overlapped == [gives_up]
    done = result.finished[str(tmp_path / "in" / f"{first[0]}.mp4")]
    assert ("shots:decoded" in done) == gives_up


def test_the_gpu_default_decodes_while_its_network_waits_to_load(tmp_path: Path) -> None:
    """``transnetv2-hsvcut`` starts its segment workers before it loads TransNetV2, so a load
    that waits for other stages' loads (the process lock; Whisper's took 12 s on the H200)
    overlaps the decoding instead of delaying it."""
    from scenescribe import backend

    info = probe(make_clip(tmp_path / "long.mp4", seconds=42))  # two 21 s segments
    detector = registry.create("transnetv2-hsvcut", "shots",
                               options=ShotOptions("transnetv2-hsvcut", workers=2))
    decoded = threading.Event()

    class Watch:
        def task(self, description: str, total: float | None = None) -> Watch:
            return self

        def advance(self, amount: float = 1.0) -> None:
            decoded.set()

        def close(self) -> None:
            pass

    found: list[Any] = []
    with backend._BUILD_LOCK:  # another stage's model is being built
        worker = threading.Thread(target=lambda: found.append(detector.detect(info, Watch())))
        worker.start()
        assert decoded.wait(60), "no frame was decoded while the network waited to load"
        assert not detector.loaded
    worker.join(120)
    assert detector.loaded and len(found[0]) >= 10  # a colour change every second
