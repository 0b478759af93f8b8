"""Media robustness (issue 11, items 3 and 9) and the sequential decode pass.

Every input is made at test time: a portrait clip stored landscape with a display-matrix
rotation, a clip with bytes overwritten in the middle of its ``mdat``, a clip cut off at 70 %.
"""

from __future__ import annotations

import logging
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from scenescribe.media import (
    SHOWN,
    TICK,
    FrameRequest,
    damage_report,
    decode_audio,
    decode_pass,
    frames_at,
    iter_frames,
    probe,
)
from scenescribe.options import FrameOptions
from scenescribe.progress import NullProgress
from scenescribe.records import Scene
from scenescribe.sampling import frame_request, sample_scene_frames

FPS = 25
W, H = 96, 54  # coded (landscape) size


def _image(k: int) -> np.ndarray:
    """Frame k: grey level 2k, a white left column band and a red top band (orientation marks)."""
    img = np.full((H, W, 3), (2 * k) % 200, np.uint8)
    img[:, :10] = 255
    img[:6, 10:] = (255, 0, 0)
    return img


def _write(path: Path, frames: int = 125, *, rotation: int | None = None, gop: int = 25,
           faststart: bool = False, audio: bool = True) -> Path:
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as out:
        video = out.add_stream("libx264", rate=FPS, options={
            "g": str(gop), "keyint_min": str(gop), "sc_threshold": "0"})
        video.width, video.height, video.pix_fmt = W, H, "yuv420p"
        if rotation is not None:
            video.set_display_rotation(rotation)  # counter-clockwise, as FFmpeg stores it
        sound = out.add_stream("aac", rate=16000, layout="mono") if audio else None
        for k in range(frames):
            out.mux(video.encode(av.VideoFrame.from_ndarray(_image(k), format="rgb24")))
        out.mux(video.encode(None))
        if sound is not None:
            t = np.arange(16000 * frames // FPS) / 16000
            samples = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
            frame = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
            frame.sample_rate = 16000
            for packet in [*sound.encode(frame), *sound.encode(None)]:
                out.mux(packet)
    return path


def _mdat(data: bytes) -> tuple[int, int]:
    at = 0
    while at < len(data):
        size, kind = int.from_bytes(data[at:at + 4], "big"), data[at + 4:at + 8]
        if kind == b"mdat":
            return at + 8, at + size
        at += size
    raise AssertionError("no mdat box")


def _level(image: np.ndarray) -> float:
    return float(image[20:, 20:].mean())  # away from the orientation bands


# ------------------------------------------------------------------------ rotation (item 3)

def test_rotated_clip_is_upright_everywhere(tmp_path: Path) -> None:
    """Stored 96x54 with a display matrix turning it 90 degrees clockwise (a phone held upright):
    the probe, iter_frames, frames_at, the decode pass and the saved JPEGs all agree on 54x96
    and on which way is up (the left band becomes the top, the red top band the right side)."""
    clip = _write(tmp_path / "rotated_90.mp4", 50, rotation=-90)
    info = probe(clip)
    assert (info.width, info.height, info.rotation) == (H, W, 90)

    def upright(image: np.ndarray) -> None:
        h, w = image.shape[:2]
        assert h > w
        assert image[: h // 12].mean() > 240  # the white band is on top
        right = image[h // 8:, -max(1, w // 12):].astype(int)
        assert (right[..., 0] - right[..., 2]).mean() > 150  # red on the right

    first = next(iter(iter_frames(clip)))
    upright(first.image)
    upright(frames_at(clip, [1.0])[1.0].image)
    small = next(iter(iter_frames(clip, short_side=27)))
    assert small.image.shape == (48, 28, 3)  # even sizes
    picks = list(decode_pass(clip, [FrameRequest((0.5,), TICK, short_side=27)]))
    assert picks[0].frame.image.shape == (48, 28, 3)
    scene = Scene(0, 0.0, 2.0, 0, 50)
    ((_, refs),) = list(sample_scene_frames(info, [scene], FrameOptions(short_side=36), tmp_path,
                                            NullProgress()))
    sizes = {Image.open(tmp_path / r.path).size for r in refs}
    assert sizes == {(36, 64)}  # width x height, portrait like the probe says


# ------------------------------------------------------------------------- damage (item 9)

def test_corrupt_middle_keeps_what_decodes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    clean = _write(tmp_path / "clean.mp4")
    data = bytearray(clean.read_bytes())
    start, end = _mdat(bytes(data))
    middle = (start + end) // 2
    data[middle:middle + 1500] = bytes(1500)
    clip = tmp_path / "corrupt_middle.mp4"
    clip.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="scenescribe.media"):
        frames = list(iter_frames(clip))
        audio = decode_audio(clip)
    assert 110 <= len(frames) < 125
    assert len(audio) == pytest.approx(5 * 16000, abs=2048)  # gaps filled: times keep their place
    lines = [r.getMessage() for r in caplog.records if "damaged video" in r.getMessage()]
    assert len(lines) == 1 and str(clip) in lines[0] and " s (" in lines[0]
    spans = [s for s in damage_report(clip) if s.stream == "video"]
    assert spans and 0.5 < spans[0].start < 4.5 and spans[0].end >= spans[0].start
    # A later frame still carries its own picture: the clock was not shifted by the damage.
    late = frames_at(clip, [4.8])[4.8]
    assert abs(_level(late.image) - (2 * 120) % 200) < 6
    # A second pass over the same damage does not warn again.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="scenescribe.media"):
        list(iter_frames(clip))
    assert not [r for r in caplog.records if "damaged video" in r.getMessage()]


def test_truncated_tail_decodes_the_rest(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    whole = _write(tmp_path / "whole.mp4", faststart=True).read_bytes()
    clip = tmp_path / "truncated_tail.mp4"
    clip.write_bytes(whole[: int(len(whole) * 0.7)])
    info = probe(clip)
    with caplog.at_level(logging.WARNING, logger="scenescribe.media"):
        audio = decode_audio(clip)
        frames = list(iter_frames(clip))
        last = frames_at(clip, [info.duration - 0.1])
    assert 1.0 * 16000 < len(audio) < 4.8 * 16000
    assert 20 < len(frames) < 120
    # The frame on screen at the end is the last that decodes. Walking there, the pass leaves
    # out B-frames nothing refers to, the damaged one among them, so it may reach a frame or
    # two past the full decode's last, never a frame that is not there.
    assert frames[-1].time - 1e-6 <= next(iter(last.values())).time <= frames[-1].time + 0.15
    text = " ".join(r.getMessage() for r in caplog.records)
    assert "cut off" in text and str(clip) in text


# ------------------------------------------------------------------ the sequential pass

def _reference(clip: Path) -> list[tuple[float, float]]:
    return [(f.time, _level(f.image)) for f in iter_frames(clip)]


def test_pass_picks_match_a_full_decode(tmp_path: Path) -> None:
    """Seeks to keyframes (GOP 1 s, B-frames) must pick exactly what decoding every frame does."""
    clip = _write(tmp_path / "gop.mp4", 250, gop=25, audio=False)
    ref = _reference(clip)
    times = sorted({0.0, 0.02, 0.96, 0.999, 1.0, 3.33, 4.0, 6.55, 9.0, 9.97, 9.99, 12.0})
    got = frames_at(clip, times)
    for t in times:
        expect = [lv for ft, lv in ref if ft <= t + 0.0005 + 1e-6][-1]
        assert abs(_level(got[t].image) - expect) < 1.0, t


def test_scene_starting_at_a_cut_gets_the_cut_frame(tmp_path: Path) -> None:
    """Sample times are rounded to the millisecond; 10/3 s rounds to 3.333, just before frame
    100/30 starts. The frame on screen is the cut's, not the last of the previous shot."""
    with av.open(str(tmp_path / "c.mp4"), "w") as out:
        s = out.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for k in range(150):
            img = np.full((48, 64, 3), 40 if k < 100 else 200, np.uint8)
            out.mux(s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(s.encode(None))
    got = frames_at(tmp_path / "c.mp4", [round(100 / 30, 3)])
    assert next(iter(got.values())).image.mean() > 150


def test_ticks_match_iter_frames_sampling(tmp_path: Path) -> None:
    clip = _write(tmp_path / "t.mp4", 125, gop=50, audio=False)
    sampled = [f.time for f in iter_frames(clip, sample_fps=2.0)]
    ticks = tuple(k / 2 for k in range(10))
    picks = list(decode_pass(clip, [FrameRequest(ticks, TICK)]))
    assert [p.frame.time for p in picks] == pytest.approx(sampled)


def test_sampled_frames_come_from_one_pass(tmp_path: Path) -> None:
    clip = _write(tmp_path / "f.mp4", 125, gop=50, audio=False)
    info = probe(clip)
    scenes = [Scene(i, i * 1.0, (i + 1) * 1.0, i * FPS, (i + 1) * FPS) for i in range(5)]
    out = list(sample_scene_frames(info, scenes, FrameOptions(), tmp_path, NullProgress()))
    assert [i for i, _ in out] == [0, 1, 2, 3, 4]
    request = frame_request(info, scenes, FrameOptions())
    assert list(request.times) == [t for _, refs in out for t in (r.time for r in refs)]
    for index, refs in out:
        start = np.asarray(Image.open(tmp_path / refs[0].path))
        assert abs(_level(start) - (2 * index * FPS) % 200) < 6  # the scene's own first frame


def test_segments_decoded_side_by_side_give_the_same_picks(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Time segments decoded at once (as on a many-core host) pick exactly what one pass picks,
    in the same order: the frame on screen at each time, and one frame per tick."""
    from scenescribe.media import segments

    monkeypatch.setattr(segments, "MIN_SEGMENT_S", 1.0)
    monkeypatch.setattr(segments, "MIN_SPARSE_SEGMENT_S", 1.0)
    clip = _write(tmp_path / "p.mp4", 250, gop=25, audio=False)
    requests = [FrameRequest((0.0, 0.999, 1.0, 2.5, 3.04, 4.0, 7.7, 9.98, 12.0), SHOWN,
                             short_side=20),
                FrameRequest(tuple(k / 2 for k in range(20)), TICK, short_side=30)]
    one = [(p.request, p.time, p.frame.time, p.frame.image.tobytes())
           for p in decode_pass(clip, requests, workers=1)]
    assert len(segments.segment_starts([k / 1.0 for k in range(10)], 10.0, 3)) >= 3
    many = [(p.request, p.time, p.frame.time, p.frame.image.tobytes())
            for p in decode_pass(clip, requests, workers=3)]
    assert many == one


def test_legacy_rotate_tag_is_the_fallback(tmp_path: Path) -> None:
    """Without a display matrix, the old ``rotate`` tag (here a Matroska tag) still counts."""
    path = tmp_path / "tagged.mkv"
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = W, H, "yuv420p"
        video.metadata["rotate"] = "90"
        for k in range(10):
            out.mux(video.encode(av.VideoFrame.from_ndarray(_image(k), format="rgb24")))
        out.mux(video.encode(None))
    info = probe(path)
    assert (info.width, info.height, info.rotation) == (H, W, 90)
    image = frames_at(path, [0.2])[0.2].image
    assert image.shape == (W, H, 3) and image[:8].mean() > 240  # the left band is now on top


def test_damaged_first_keyframe_still_probes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The probe looks past a damaged start; the GOP lost with its keyframe is the span named."""
    clip = _write(tmp_path / "start.mp4", 125, gop=25)
    with av.open(str(clip)) as container:
        first = next(p for p in container.demux(video=0) if p.size)
        pos, size = first.pos, first.size
    data = bytearray(clip.read_bytes())
    data[pos + 4:pos + size] = bytes(size - 4)
    damaged = tmp_path / "damaged_start.mp4"
    damaged.write_bytes(bytes(data))
    info = probe(damaged)
    assert info.has_video and (info.width, info.height) == (W, H)
    with caplog.at_level(logging.WARNING, logger="scenescribe.media"):
        frames = list(iter_frames(damaged))
    assert 90 <= len(frames) < 125 and frames[0].time >= 0.9
    (span,) = [s for s in damage_report(damaged) if s.stream == "video"]
    assert span.start == 0.0 and span.end == pytest.approx(1.0, abs=0.05)
