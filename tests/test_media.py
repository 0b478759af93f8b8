"""Media layer: probing, timestamps, sampling at times, audio."""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from conftest import media
from scenescribe.errors import InputError
from scenescribe.media import decode_audio, frames_at, iter_audio_blocks, iter_frames, probe


def _write_clip(path: Path, seconds: int, fps: int, gop: int, vfr: bool = False,
                bframes: int = 0) -> None:
    """A clip whose frame k shows grey level 2*k, so a frame's pixels name its index; with
    ``bframes``, that many B-frames between anchors, none of them a reference."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.gop_size = gop
        stream.codec_context.time_base = Fraction(1, 1000)
        stream.options = {"keyint_min": str(gop), "sc_threshold": "0", "x264-params":
                          f"bframes={bframes}:b-adapt=0:b-pyramid=none"}
        t_ms = 0
        for k in range(seconds * fps):
            img = np.full((48, 64, 3), (2 * k) % 256, np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = t_ms
            frame.time_base = Fraction(1, 1000)
            t_ms += (1000 // fps) * (2 if vfr and k % 2 else 1)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def test_frames_at_with_keyframes_far_apart(tmp_path: Path) -> None:
    clip = tmp_path / "gop.mp4"
    _write_clip(clip, seconds=12, fps=10, gop=100)  # keyframes 10 s apart
    got = frames_at(clip, [0.0, 7.6, 9.95, 11.9])
    assert got[7.6].time == pytest.approx(7.6)
    level = float(got[7.6].image.mean())
    assert abs(level - 2 * 76) < 4
    assert got[11.9].time == pytest.approx(11.9)


def test_times_come_from_timestamps_with_variable_frame_rate(tmp_path: Path) -> None:
    clip = tmp_path / "vfr.mp4"
    _write_clip(clip, seconds=2, fps=10, gop=10, vfr=True)
    times = [f.time for f in iter_frames(clip)]
    gaps = np.diff(times)
    assert gaps.min() == pytest.approx(0.1, abs=0.002) and gaps.max() == pytest.approx(0.2, abs=0.002)


def test_iter_frames_downscales_and_samples(synthetic_clip: Path) -> None:
    frames = list(iter_frames(synthetic_clip, width=160, sample_fps=2.0))
    assert len(frames) == 60 and frames[0].image.shape == (90, 160, 3)
    assert 0.5 <= frames[1].time < 0.5 + 1 / 25 + 1e-6  # first frame at or after each tick


def test_probe_reports_streams(bbb_clip: Path) -> None:
    info = probe(bbb_clip)
    assert (info.width, info.height, info.fps) == (1280, 720, 24.0)
    assert info.duration == pytest.approx(30.0, abs=0.05) and info.has_audio


@pytest.mark.parametrize("rel,reason", [("bad_inputs/zero_bytes.mp4", "empty"),
                                        ("bad_inputs/not_a_video.mp4", "not a media file"),
                                        ("bad_inputs/truncated_no_moov.mp4", "moov")])
def test_probe_errors_name_file_and_reason(rel: str, reason: str) -> None:
    path = media(rel)
    with pytest.raises(InputError, match=reason) as err:
        probe(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_audio_blocks_cover_the_file_once(synthetic_clip: Path) -> None:
    whole = decode_audio(synthetic_clip)
    assert len(whole) == pytest.approx(30 * 16000, abs=400)
    blocks = list(iter_audio_blocks(synthetic_clip, block_seconds=7.0))
    assert [round(s, 3) for s, _ in blocks[:3]] == [0.0, 7.0, 14.0]
    assert np.array_equal(np.concatenate([b for _, b in blocks]), whole)
    part = decode_audio(synthetic_clip, start=5.5, end=6.0)
    assert len(part) == 8000
    assert np.allclose(part, whole[88000:96000], atol=1e-6)


def test_read_ahead_keeps_order_hands_on_errors_and_stops_its_source() -> None:
    from scenescribe.media.readahead import ReadAhead

    assert list(ReadAhead(iter(range(50)), depth=3)) == list(range(50))

    def failing() -> Iterator[int]:
        yield 1
        raise InputError("clip.mp4", "is cut off")

    ahead = ReadAhead(failing(), depth=2)
    assert next(ahead) == 1
    with pytest.raises(InputError, match="clip.mp4"):
        next(ahead)

    pulled: list[int] = []
    closed: list[bool] = []

    def endless() -> Iterator[int]:
        try:
            for i in range(10**9):
                pulled.append(i)
                yield i
        finally:
            closed.append(True)  # the source is closed on the read-ahead thread

    ahead = ReadAhead(endless(), depth=2)
    assert next(ahead) == 0
    ahead.close()
    assert closed == [True] and len(pulled) <= 5


@pytest.mark.parametrize("vfr", [False, True])
def test_a_pass_drops_only_frames_it_cannot_need(tmp_path: Path, vfr: bool,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Walking toward a far wanted time, B-frames nothing refers to go undecoded; the picks,
    their pixels and their indices are those of a pass that decodes everything."""
    from scenescribe.media import SHOWN, TICK, FrameRequest, decode_pass, stream

    clip = tmp_path / "b.mp4"
    _write_clip(clip, seconds=12, fps=10, gop=60, vfr=vfr, bframes=3)
    requests = [FrameRequest((0.05, 1.0, 3.33, 5.5, 5.51, 9.0, 11.9, 30.0), SHOWN),
                FrameRequest((2.0, 7.25, 8.0), TICK, short_side=24)]
    opened: list[stream.VideoStream] = []
    init = stream.VideoStream.__init__

    def recorded(self: stream.VideoStream, *args: Any) -> None:
        init(self, *args)
        opened.append(self)

    monkeypatch.setattr(stream.VideoStream, "__init__", recorded)

    def run() -> tuple[list[tuple[int, float, float, int, bytes]], int]:
        opened.clear()
        picks = [(p.request, p.time, p.frame.time, p.frame.index, p.frame.image.tobytes())
                 for p in decode_pass(clip, requests, workers=1)]
        return picks, sum(v.decoded_count for v in opened)

    dropping, decoded = run()
    monkeypatch.setattr(stream.VideoStream, "_discardable", lambda self, packet: False)
    everything, all_decoded = run()
    assert dropping == everything and len(everything) == 11
    assert decoded < 0.8 * all_decoded
