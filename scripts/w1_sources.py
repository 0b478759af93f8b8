"""Source material of the W1 suite builder (scripts/make_w1_suite.py): the shared output constants,
the output format and shot records, the real clips under the media folder, and rendering a shot's
frames from them (decoding, crop/scale/mirror/tint filter graphs, generated panning patterns)."""

from __future__ import annotations

import bisect
import itertools
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.filter
import numpy as np

from scenescribe.media import probe

FPS = 30
SAMPLE_RATE = 48_000


@dataclass(frozen=True)
class Format:
    width: int
    height: int
    preset: str
    crf: int


@dataclass
class Shot:
    """One shot: output frames ``[start_frame, start_frame + n_frames)`` and how they are made."""

    index: int
    start_frame: int
    n_frames: int
    family: str
    source: str = ""  # file under the media folder, or "generated:<pattern kind>"
    content: str = ""
    source_start_s: float = 0.0
    speed: float = 1.0
    playback: str = "forward"  # or "pingpong": a short clip played forth and back
    segment: tuple[float, float] = (0.0, 0.0)
    crop: tuple[int, int, int, int] = (0, 0, 0, 0)  # x, y, w, h in source pixels
    hflip: bool = False
    hue_deg: float = 0.0
    saturation: float = 1.0
    luma_gain: float = 1.0
    luma_offset: float = 0.0
    pattern: dict[str, Any] = field(default_factory=dict)
    background_offset_s: float = 0.0


@dataclass(frozen=True)
class Clip:
    """A real source clip and its cut-free segments (seconds), each with a description."""

    family: str
    rel: str  # path under the media folder
    width: int
    height: int
    segments: tuple[tuple[float, float], ...]
    contents: tuple[str, ...]
    pingpong: bool = False  # too short for a shot: played forth and back


def discover_clips(media: Path) -> dict[str, list[Clip]]:
    """The real clips by family, with segments kept clear of their own cuts and fades."""
    bbb = json.loads((media / "real/big_buck_bunny_0_30.gt.json").read_text())
    fade_end = max((g["end_s"] for g in bbb.get("gradual_transitions", [])), default=0.0)
    bounds = [fade_end, *(c["time_s"] for c in bbb["cuts"]), bbb["video"]["duration_s"]]
    segments = tuple((round(a + 0.1, 3), round(b - 0.1, 3))
                     for a, b in itertools.pairwise(bounds))
    clips = {"bbb": [_clip(media, "bbb", "real/big_buck_bunny_0_30.webm", segments,
                           tuple(f"Big Buck Bunny: {s['content']}" for s in bbb["shots"]))]}
    for family, name in (("car", "intel_car-detection"),
                         ("person", "intel_one-by-one-person-detection")):
        gt = json.loads((media / f"real/{name}.gt.json").read_text())
        end = round(gt["video"]["duration_s"] - 0.2, 3)
        clips[family] = [_clip(media, family, f"real/{name}.mp4", ((0.1, end),),
                               (gt["shots"][0]["content"],))]
    clips["grid"] = [
        _clip(media, "grid", str(p.relative_to(media)), ((0.0, 2.9),),
              (f"GRID corpus talking face saying '{grid_sentence(p.stem)}'",), pingpong=True)
        for p in sorted((media / "real/grid").glob("*.mpg"))]
    return clips


def _clip(media: Path, family: str, rel: str, segments: tuple[tuple[float, float], ...],
          contents: tuple[str, ...], pingpong: bool = False) -> Clip:
    info = probe(media / rel)
    return Clip(family, rel, info.width, info.height, segments, contents, pingpong)


def grid_sentence(name: str) -> str:
    """The GRID sentence a file name encodes, e.g. ``bbaf2n`` -> "bin blue at f two now"."""
    code = name.rsplit("_", 1)[-1]
    parts = ({"b": "bin", "l": "lay", "p": "place", "s": "set"},
             {"b": "blue", "g": "green", "r": "red", "w": "white"},
             {"a": "at", "b": "by", "i": "in", "w": "with"})
    digits = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
    adverbs = {"a": "again", "n": "now", "p": "please", "s": "soon"}
    words = [table[c] for table, c in zip(parts, code[:3], strict=True)]
    return " ".join([*words, code[3], digits[int(code[4])], adverbs[code[5]]])


# ----------------------------------------------------------------------------------- rendering

class FrameSource:
    """Decoded frames of the source clips; short ping-pong clips are decoded once and kept."""

    def __init__(self, media: Path) -> None:
        self.media = media
        self._cache: dict[str, tuple[list[float], list[av.VideoFrame]]] = {}

    def forward(self, rel: str, start: float) -> Iterator[tuple[float, av.VideoFrame]]:
        with av.open(str(self.media / rel)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            origin = float(stream.start_time * stream.time_base) if stream.start_time else 0.0
            if start > 0.5:
                container.seek(int((start - 0.5 + origin) / stream.time_base), stream=stream)
            for frame in container.decode(stream):
                yield float(frame.pts * stream.time_base) - origin, frame

    def whole(self, rel: str) -> tuple[list[float], list[av.VideoFrame]]:
        if rel not in self._cache:
            pairs = list(self.forward(rel, 0.0))
            self._cache[rel] = ([t for t, _ in pairs], [f for _, f in pairs])
        return self._cache[rel]


def shot_frames(shot: Shot, fmt: Format, frames: FrameSource) -> Iterator[av.VideoFrame]:
    """The shot's ``n_frames`` output frames as yuv420p at the suite's size."""
    if shot.family == "pattern":
        yield from _pattern_frames(shot, fmt)
        return
    times = [k / FPS * shot.speed for k in range(shot.n_frames)]
    if shot.playback == "pingpong":
        lo, hi = shot.segment
        span = hi - lo
        folded = [(shot.source_start_s - lo + t) % (2 * span) for t in times]
        wanted = [lo + (f if f <= span else 2 * span - f) for f in folded]
        stamps, cached = frames.whole(shot.source)
        picked: Iterator[av.VideoFrame] = (
            cached[max(0, bisect.bisect_right(stamps, w + 1e-6) - 1)] for w in wanted)
    else:
        picked = _latest(frames.forward(shot.source, shot.source_start_s),
                         [shot.source_start_s + t for t in times])
    graph: Any = None
    memo: dict[int, av.VideoFrame] = {}
    for src in picked:
        if id(src) not in memo:
            if graph is None:
                graph = _filter_graph(src, shot, fmt)
            if shot.playback != "pingpong":
                memo.clear()  # forward playback never returns to an earlier frame
            graph.push(src)
            memo[id(src)] = graph.pull()
        yield memo[id(src)]


def _latest(decoded: Iterator[tuple[float, av.VideoFrame]],
            wanted: Sequence[float]) -> Iterator[av.VideoFrame]:
    """For each wanted time (non-decreasing), the last frame shown at or before it."""
    current = next(decoded)
    upcoming = next(decoded, None)
    for w in wanted:
        while upcoming is not None and upcoming[0] <= w + 1e-6:
            current, upcoming = upcoming, next(decoded, None)
        yield current[1]


def _filter_graph(frame: av.VideoFrame, shot: Shot, fmt: Format) -> Any:
    graph = av.filter.Graph()
    node = graph.add_buffer(width=frame.width, height=frame.height, format=frame.format.name,
                            time_base=Fraction(1, 1000))
    x, y, w, h = shot.crop
    steps = [("crop", f"{w}:{h}:{x}:{y}"), ("scale", f"{fmt.width}:{fmt.height}"),
             ("setsar", "1")]
    if shot.hflip:
        steps.append(("hflip", None))
    steps += [("hue", f"h={shot.hue_deg}:s={shot.saturation}"),
              ("lutyuv", f"y=val*{shot.luma_gain}+{shot.luma_offset}"), ("format", "yuv420p")]
    for name, arg in steps:
        nxt = graph.add(name, arg) if arg else graph.add(name)
        node.link_to(nxt)
        node = nxt
    sink = graph.add("buffersink")
    node.link_to(sink)
    graph.configure()
    return graph


def _pattern_frames(shot: Shot, fmt: Format) -> Iterator[av.VideoFrame]:
    """A generated still pattern on a larger canvas, panned back and forth (no cut inside)."""
    w, h = fmt.width, fmt.height
    mx, my = w // 8 * 2 // 2 * 2, h // 8 * 2 // 2 * 2
    planes = _pattern_planes(shot.pattern, w + 2 * mx, h + 2 * my, h)
    vx, vy = (v * h / FPS for v in shot.pattern["pan"])  # pan: output heights per second
    for k in range(shot.n_frames):
        x0 = int(_triangle(k * vx, mx)) // 2 * 2
        y0 = int(_triangle(k * vy, my)) // 2 * 2
        out = np.empty((h * 3 // 2, w), np.uint8)
        out[:h] = planes[0][y0:y0 + h, x0:x0 + w]
        out[h:h + h // 4] = planes[1][y0 // 2:(y0 + h) // 2, x0 // 2:(x0 + w) // 2].reshape(-1, w)
        out[h + h // 4:] = planes[2][y0 // 2:(y0 + h) // 2, x0 // 2:(x0 + w) // 2].reshape(-1, w)
        yield av.VideoFrame.from_ndarray(out, format="yuv420p")


def _triangle(x: float, amplitude: int) -> float:
    """Bounce between 0 and ``2 * amplitude`` starting from the middle."""
    period = 4 * amplitude
    p = (x + amplitude) % period
    return p if p <= 2 * amplitude else period - p


def _pattern_planes(p: dict[str, Any], cw: int, ch: int, unit: int) -> list[np.ndarray]:
    yy, xx = np.mgrid[0:ch, 0:cw].astype(np.float32) / unit  # unit: output height
    xx -= cw / unit / 2 + p["centre"][0]
    yy -= ch / unit / 2 + p["centre"][1]
    colours = np.array(p["colours"], np.float32)
    along = xx * np.cos(p["angle"]) + yy * np.sin(p["angle"])
    if p["kind"] == "bars":
        rgb = colours[(np.floor(along * p["freq"]) % len(colours)).astype(np.intp)]
    else:
        if p["kind"] == "rings":
            mix = 0.5 + 0.5 * np.sin(2 * np.pi * p["freq"] * np.hypot(xx, yy))
        elif p["kind"] == "checker":
            mix = ((np.floor(xx * p["freq"]) + np.floor(yy * p["freq"])) % 2).astype(np.float32)
        else:
            mix = 0.5 + 0.25 * np.sin(2 * np.pi * p["freq"] * along) + 0.25 * np.sin(
                2 * np.pi * p["freq"] * 0.37 * (yy - xx * 0.5))
        rgb = colours[0] * mix[..., None] + colours[1] * (1 - mix[..., None])
    image = np.ascontiguousarray(np.clip(rgb, 0, 255).astype(np.uint8))
    yuv = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
    return [np.frombuffer(pl, np.uint8).reshape(pl.height, pl.line_size)[:, :pl.width]
            for pl in yuv.planes]
