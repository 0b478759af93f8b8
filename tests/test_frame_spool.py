"""The frame spool: the shot detector's decode keeps the object detector's tick frames, and they
are exactly the ones the detector's own ``decode_pass`` picks (ticks, times, pixels), from one
pass and from segments decoded in other processes. A spool that cannot be trusted is never
read."""

from __future__ import annotations

import json
import math
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from conftest import media
from scenescribe import registry
from scenescribe.errors import StageError
from scenescribe.media import TICK, FrameRequest, decode_pass, iter_frames, probe
from scenescribe.media.spool import SPOOL_GB, FrameSpool, TickSpec, fits, tidy
from scenescribe.objects.detected import tick_count
from scenescribe.options import ShotOptions
from scenescribe.progress import NullProgress
from scenescribe.records import VideoInfo
from scenescribe.shots.segments import detect_in_segments, plan_segments
from scenescribe.shots.shared_decode import SharedDecode

BBB = "real/big_buck_bunny_0_30.webm"  # 24 fps, WebM: no keyframe index
CAR = "real/intel_car-detection.mp4"  # 12.5 fps, MP4 with an index
SYNTH = "synthetic/synthetic_cuts_speech.mp4"  # 25 fps, hard cuts


def _spec(info: VideoInfo, fps: float = 2.0) -> TickSpec:
    return TickSpec(fps, tick_count(info.duration, fps), max(2, min(info.width, info.height) // 2))


def _own_pass(info: VideoInfo, spec: TickSpec, wanted: list[int]) -> list[tuple[int, float, bytes]]:
    """What the detector's own decode picks: ``YoloTracker._decoded``'s rule."""
    request = FrameRequest(tuple(k / spec.fps for k in wanted), TICK, short_side=spec.short_side)
    return [(round(p.time * spec.fps), p.frame.time, p.frame.image.tobytes())
            for p in decode_pass(info.path, [request])]


def _spooled(spool: FrameSpool, wanted: list[int]) -> list[tuple[int, float, bytes]]:
    opened = FrameSpool.open(spool.folder, spool.spec)
    assert opened is not None
    return [(tick, frame.time, frame.image.tobytes()) for tick, frame in opened.picks(wanted)]


def _wanted(spec: TickSpec) -> list[list[int]]:
    every = list(range(spec.count))
    return [every, [k for k in every if k % 7 in (2, 3, 4) or k > spec.count - 3]]


def _ignore(frames: float) -> None:
    pass


def _one_pass_spool(info: VideoInfo, spec: TickSpec, folder: Path) -> FrameSpool:
    spool = FrameSpool.create(folder, spec)
    tap = spool.tap()
    for _ in iter_frames(info.path, pixel_format="yuv420p", tap=tap):
        pass
    tap.close()
    spool.seal(1)
    return spool


@pytest.mark.parametrize("clip", [BBB, CAR, SYNTH])
def test_a_spool_from_segments_holds_what_the_own_pass_picks(clip: str, tmp_path: Path) -> None:
    info = probe(media(clip))
    spec = _spec(info)
    spool = FrameSpool.create(tmp_path / "spool", spec)
    segments = plan_segments(info.duration, 16, min_seconds=4.0)  # a seam every few seconds
    with SharedDecode(None, info, _ignore, segments=segments, spool=spool) as split:
        assert split.parallel and len(segments) >= 3
        for _ in split.frames():
            pass
    assert spool.sealed
    for wanted in _wanted(spec):
        own = _own_pass(info, spec, wanted)
        assert len(own) > 10
        assert _spooled(spool, wanted) == own


def test_segments_seal_the_spool_once_their_decoders_are_done(tmp_path: Path) -> None:
    """The spool is sealed (and its reader told, once) as soon as the last decoder is done,
    before anyone reads the network's frames; decoders that fail never seal it, but the end
    of the decode is told either way (``on_decoded``: the next video's turn to decode)."""
    info = probe(media(SYNTH))
    spec = _spec(info)
    spool = FrameSpool.create(tmp_path / "spool", spec)
    told = threading.Event()
    calls: list[str] = []
    spool.on_sealed = lambda: (calls.append(threading.current_thread().name), told.set())
    segments = plan_segments(info.duration, 4, min_seconds=4.0)
    decoded = threading.Event()
    with SharedDecode(None, info, _ignore, segments=segments, spool=spool,
                      on_decoded=decoded.set) as split:
        assert told.wait(60) and decoded.is_set(), "not sealed before the frames were read"
        assert spool.sealed and _spooled(spool, list(range(spec.count))) == _own_pass(
            info, spec, list(range(spec.count)))
        assert sum(1 for _ in split.frames()) == info.num_frames
    assert len(calls) == 1 and calls[0].startswith("shots")

    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\0" * 4096)
    spool = FrameSpool.create(tmp_path / "broken-spool", spec)
    spool.on_sealed = told.clear
    decoded.clear()
    with SharedDecode(None, replace(info, path=broken), _ignore, segments=segments,
                      spool=spool, on_decoded=decoded.set) as split, pytest.raises(
                          StageError, match="broken.mp4"):
        list(split.frames())
    assert not spool.sealed and told.is_set() and decoded.is_set()


def test_frames_covering_several_ticks_match_on_every_subset(tmp_path: Path) -> None:
    """At 30 ticks a second a 12.5 fps frame covers two or three ticks: the pick's tick is the
    first wanted one it covers, as the own pass numbers it. One pass in this process."""
    info = probe(media(CAR))
    spec = _spec(info, fps=30.0)
    spool = _one_pass_spool(info, spec, tmp_path / "spool")
    for wanted in [*_wanted(spec), [k for k in range(spec.count) if k % 3 == 1]]:
        assert _spooled(spool, wanted) == _own_pass(info, spec, wanted)


def test_hsvcut_in_segments_fills_the_spool_beside_its_cuts(tmp_path: Path) -> None:
    info = probe(media(SYNTH))
    spec = _spec(info)
    detector = registry.create("hsvcut", "shots", options=ShotOptions("hsvcut"))
    detector.load()
    spool = FrameSpool.create(tmp_path / "spool", spec)
    segments = plan_segments(info.duration, 16, min_seconds=8.0)
    cuts = detect_in_segments(detector, info, segments, NullProgress(), spool)
    assert cuts == detector.detect(info, NullProgress())  # the cuts are untouched
    assert spool.sealed
    assert _spooled(spool, list(range(spec.count))) == _own_pass(info, spec,
                                                                 list(range(spec.count)))


def test_a_span_decoded_without_the_frame_before_it_is_not_trusted(tmp_path: Path) -> None:
    """A decoder that starts inside its span cannot tell which ticks its first frame covers."""
    info = probe(media(SYNTH))
    spec = _spec(info)
    spool = FrameSpool.create(tmp_path / "spool", spec)
    taps = [spool.tap(0, 0.0, 10.0), spool.tap(1, 10.0, math.inf)]
    for tap, start in zip(taps, (0.0, 10.0), strict=True):
        for _ in iter_frames(info.path, width=64, start=start, end=None, tap=tap):
            pass
        tap.close()
    spool.seal(2)
    assert FrameSpool.open(spool.folder, spec) is None


def _sealed_spool(tmp_path: Path) -> FrameSpool:
    info = probe(media(CAR))
    return _one_pass_spool(info, _spec(info), tmp_path / "work" / "spool" / "detections-0")


def test_a_damaged_or_foreign_spool_is_not_read(tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    spool = _sealed_spool(tmp_path)
    assert FrameSpool.open(spool.folder, spool.spec) is not None
    other = TickSpec(spool.spec.fps, spool.spec.count, (spool.spec.short_side or 0) + 2)
    assert FrameSpool.open(spool.folder, other) is None  # written for other frames
    data = spool.folder / "0.rgb"
    data.write_bytes(data.read_bytes()[:-5])
    assert FrameSpool.open(spool.folder, spool.spec) is None
    assert "wrong size" in caplog.text
    index = spool.folder / "0.json"
    index.write_text(json.dumps({"exact": True, "shape": [2, 2, 3], "frames": [[0, 0, "x"]]}))
    assert FrameSpool.open(spool.folder, spool.spec) is None
    (spool.folder / "spool.json").unlink()
    assert FrameSpool.open(spool.folder, spool.spec) is None  # never sealed


def test_the_budget_decides_whether_a_spool_is_written(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    spec = TickSpec(2.0, 600, 360)  # 5 minutes of 640x360 frames: about 0.4 GB
    assert fits(tmp_path / "not-yet" / "spool", spec, 1280, 720)
    monkeypatch.setenv(SPOOL_GB, "0")
    assert not fits(tmp_path, spec, 1280, 720)
    monkeypatch.setenv(SPOOL_GB, "1")
    assert fits(tmp_path, spec, 1280, 720)
    assert not fits(tmp_path, TickSpec(2.0, 6000, 360), 1280, 720)  # 50 minutes: 4 GB
    assert not fits(tmp_path, spec, 0, 0)


def test_picks_are_writable_arrays(tmp_path: Path) -> None:
    spool = _sealed_spool(tmp_path)
    opened = FrameSpool.open(spool.folder, spool.spec)
    assert opened is not None
    _, frame = next(iter(opened.picks([0])))
    assert frame.image.flags.writeable and frame.image.dtype == np.uint8
    opened.remove()  # not the folder of spools: another stage may be creating its own there
    assert not spool.folder.exists() and spool.folder.parent.is_dir()
    tidy(tmp_path / "work")  # the run's end: the empty folder goes, not the work folder
    assert not spool.folder.parent.exists() and (tmp_path / "work").is_dir()


def test_rotated_and_damaged_clips_give_the_own_pass_frames(tmp_path: Path) -> None:
    """Upright frames from a clip with a display rotation; from a clip with bytes overwritten
    mid-stream, the frames that decode, at the same ticks."""
    from test_media_robust import _mdat, _write

    rotated = _write(tmp_path / "rotated.mp4", 100, rotation=-90)
    clean = _write(tmp_path / "clean.mp4")
    data = bytearray(clean.read_bytes())
    start, end = _mdat(bytes(data))
    data[(start + end) // 2:(start + end) // 2 + 1500] = bytes(1500)
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    for clip in (rotated, damaged):
        info = probe(clip)
        spec = TickSpec(5.0, tick_count(info.duration, 5.0), 27)
        spool = _one_pass_spool(info, spec, tmp_path / f"spool-{clip.stem}")
        for wanted in _wanted(spec):
            assert _spooled(spool, wanted) == _own_pass(info, spec, wanted), clip.name
