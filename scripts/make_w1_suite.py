#!/usr/bin/env python
"""Build the W1 reference suite of ../shared/BENCHMARK.md deterministically from ../shared/media.

Four videos shaped like the reference document's (exact durations and scene counts), 1280x720,
30 fps, H.264 + AAC: hard-cut shots cropped, zoomed, mirrored and tinted from the real clips
(Big Buck Bunny, Intel car park and room, GRID talking faces) and generated patterns, with real
speech (GRID sentences, the synthetic clip's espeak-ng sentences) laid at seeded times over a
quiet Big Buck Bunny soundtrack. A ``<name>.gt.json`` beside each video holds the cuts, shots
and speech placements. ``--small`` builds a 640x360 variant (four 20-30 s videos) for CPU tests.

Every random choice comes from ``random.Random(seed).random()``, whose sequence Python keeps
stable across versions; x264 runs with a fixed thread count, so a rerun with the same PyAV gives
the same ground truth and the same decoded frames (and, in practice, the same bytes).

    python scripts/make_w1_suite.py --out /tmp/w1 [--small] [--only w1_sitcom]
"""

from __future__ import annotations

import argparse
import bisect
import colorsys
import functools
import itertools
import json
import logging
import os
import random
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.filter
import numpy as np

from scenescribe.media import decode_audio, probe

log = logging.getLogger("scenescribe.w1_suite")

FPS = 30
SAMPLE_RATE = 48_000
MIN_SCENE_S = 2.0
X264_THREADS = 2  # fixed: x264's output depends on its thread count
BACKGROUND_GAIN = 0.25  # the soundtrack sits about 12 dB under the speech
FAMILIES = ("bbb", "car", "person", "grid", "pattern")


@dataclass(frozen=True)
class Format:
    width: int
    height: int
    preset: str
    crf: int


@dataclass(frozen=True)
class VideoSpec:
    name: str
    look_alike: str
    duration_s: int
    scenes: int
    seed: int
    weights: tuple[float, ...]  # per FAMILIES entry: how often a shot draws from it
    speech_gap_s: tuple[float, float]


FULL_FORMAT = Format(1280, 720, "veryfast", 23)
SMALL_FORMAT = Format(640, 360, "ultrafast", 26)
FULL = (
    VideoSpec("w1_football", "a football match", 459, 75, 1001, (2, 3, 1, 1, 2), (1.0, 4.0)),
    VideoSpec("w1_sitcom", "a sitcom", 168, 35, 1002, (2, 1, 3, 2, 1), (0.5, 3.0)),
    VideoSpec("w1_interview", "an interview", 273, 22, 1003, (1, 0.5, 2, 4, 1), (0.3, 1.5)),
    VideoSpec("w1_cooking", "a cooking tutorial", 328, 59, 1004, (2, 1, 2, 1, 2), (1.0, 5.0)),
)
# Seeds picked so that the few small shots still draw on every source family.
SMALL = (
    VideoSpec("w1s_football", "a football match", 22, 6, 2003, (2, 3, 1, 1, 2), (1.0, 4.0)),
    VideoSpec("w1s_sitcom", "a sitcom", 20, 5, 2009, (2, 1, 3, 2, 1), (0.5, 3.0)),
    VideoSpec("w1s_interview", "an interview", 24, 3, 2003, (1, 0.5, 2, 4, 1), (0.3, 1.5)),
    VideoSpec("w1s_cooking", "a cooking tutorial", 20, 4, 2005, (2, 1, 2, 1, 2), (1.0, 5.0)),
)


class Rng:
    """Seeded choices built only on ``random.random()``, the one stream Python keeps stable."""

    def __init__(self, seed: int) -> None:
        self._r = random.Random(seed)

    def uniform(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * self._r.random()

    def below(self, n: int) -> int:
        return min(n - 1, int(self._r.random() * n))

    def weighted(self, weights: Sequence[float]) -> int:
        x = self._r.random() * sum(weights)
        for i, w in enumerate(weights):
            x -= w
            if x < 0 and w > 0:
                return i
        return max(i for i, w in enumerate(weights) if w > 0)


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


# ------------------------------------------------------------------------------------ sources

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


@dataclass(frozen=True)
class Snippet:
    """One spoken sentence, trimmed, at SAMPLE_RATE; speech span and words relative to its start."""

    text: str
    source: str
    samples: np.ndarray
    speech_start_s: float
    speech_end_s: float
    words: tuple[tuple[float, float, str], ...] = ()


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


def load_snippets(media: Path) -> list[Snippet]:
    """The GRID sentences and the synthetic clip's espeak-ng sentences, level-matched.

    A GRID sentence's extent is measured (its recordings carry a noise floor); an espeak-ng
    sentence's comes from the synthetic clip's own ground truth.
    """
    snippets = []
    for path in sorted((media / "real/grid").glob("*.mpg")):
        code = path.stem.rsplit("_", 1)[-1]
        audio = decode_audio(path, SAMPLE_RATE)
        align = path.with_name(f"{code}.align")
        words = [(int(a) / 25_000, int(b) / 25_000, w) for a, b, w in
                 (line.split() for line in align.read_text().splitlines()) if w != "sil"
                 ] if align.exists() else []
        snippets.append(_snippet(grid_sentence(code), f"grid:{path.name}", audio,
                                 _speech_span(audio), words))
    synthetic = media / "synthetic/synthetic_cuts_speech.mp4"
    audio = decode_audio(synthetic, SAMPLE_RATE)
    gt = json.loads(synthetic.with_suffix(".gt.json").read_text())
    for row in gt["transcript"]:
        snippets.append(_snippet(row["text"], f"espeak-ng:{synthetic.name}#{row['index']}",
                                 audio, (row["start_s"], row["end_s"]), []))
    return snippets


def _snippet(text: str, source: str, audio: np.ndarray, span: tuple[float, float],
             words: list[tuple[float, float, str]]) -> Snippet:
    """Cut ``span`` (seconds) with a little air either side, fade the edges, match the level."""
    a = max(0, int((span[0] - 0.12) * SAMPLE_RATE))
    # Generous air after the span: a last word's soft tail ("now") may sit under the threshold.
    piece = audio[a:int((span[1] + 0.35) * SAMPLE_RATE)].astype(np.float32)
    fade = np.linspace(0.0, 1.0, SAMPLE_RATE // 100, dtype=np.float32)
    piece[:len(fade)] *= fade
    piece[-len(fade):] *= fade[::-1]
    # Loudest 20 ms at -13 dBFS, peaks below -2.5 dBFS so speech over the background never clips.
    gain = min(10 ** ((-13.0 - _window_db(piece).max()) / 20), 0.75 / np.abs(piece).max())
    piece *= np.float32(gain)
    offset = a / SAMPLE_RATE
    shifted = tuple((round(x - offset, 4), round(y - offset, 4), w) for x, y, w in words)
    return Snippet(text, source, piece, round(span[0] - offset, 3), round(span[1] - offset, 3),
                   shifted)


def _window_db(audio: np.ndarray, window_s: float = 0.02) -> np.ndarray:
    n = int(window_s * SAMPLE_RATE)
    frames = audio[: len(audio) // n * n].reshape(-1, n)
    return 10 * np.log10((frames.astype(np.float64) ** 2).mean(axis=1) + 1e-12)


def _speech_span(audio: np.ndarray) -> tuple[float, float]:
    """First and last 20 ms window within 20 dB of the loudest: the sentence's extent.

    20 dB sits above the GRID recordings' noise floor; on swwp2s it gives 0.56-2.16 s against
    0.49-2.21 s in the corpus's word alignment (a soft initial "s" starts under the threshold).
    """
    db = _window_db(audio)
    active = np.nonzero(db > db.max() - 20.0)[0]
    return round(float(active[0]) * 0.02, 3), round(float(active[-1] + 1) * 0.02, 3)


def load_background(media: Path) -> np.ndarray:
    """Big Buck Bunny's soundtrack (ambience and music, no speech) as mono float32."""
    return decode_audio(media / "real/big_buck_bunny_0_30.webm", SAMPLE_RATE)


# ----------------------------------------------------------------------------------- planning

def plan_lengths(total: int, n: int, min_len: int, rng: Rng) -> list[int]:
    """``n`` shot lengths in frames, each at least ``min_len``, summing to ``total`` exactly."""
    extra = total - n * min_len
    if extra < 0:
        raise ValueError(f"{n} scenes of {min_len} frames do not fit in {total} frames")
    weights = [1.0 + 7.0 * rng.uniform(0, 1) ** 2 for _ in range(n)]  # many short, a few long
    share = [extra * w / sum(weights) for w in weights]
    lengths = [min_len + int(s) for s in share]
    by_fraction = sorted(range(n), key=lambda i: (-(share[i] - int(share[i])), i))
    for i in by_fraction[: total - sum(lengths)]:
        lengths[i] += 1
    return lengths


def plan_shots(spec: VideoSpec, clips: dict[str, list[Clip]], rng: Rng,
               bg_seconds: float) -> list[Shot]:
    """The video's shots: seeded lengths, then per shot a source family (never the previous
    one, so every cut is a clear change), a source segment or pattern, and a background offset."""
    total = spec.duration_s * FPS
    lengths = plan_lengths(total, spec.scenes, int(MIN_SCENE_S * FPS), rng)
    shots: list[Shot] = []
    start, previous = 0, ""
    for i, n in enumerate(lengths):
        seconds = n / FPS
        weights = [0.0 if f == previous or not _fits(f, clips, seconds) else w
                   for f, w in zip(FAMILIES, spec.weights, strict=True)]
        family = FAMILIES[rng.weighted(weights)]
        shot = Shot(i, start, n, family, background_offset_s=round(rng.uniform(0, bg_seconds), 3))
        if family == "pattern":
            shot.pattern = _pattern_params(rng)
            shot.source = f"generated:{shot.pattern['kind']}"
            shot.content = f"generated {shot.pattern['kind']} pattern, panning"
        else:
            _choose_clip(shot, clips[family], seconds, rng)
        shots.append(shot)
        start, previous = start + n, family
    return shots


def _fits(family: str, clips: dict[str, list[Clip]], seconds: float) -> bool:
    if family == "pattern":
        return True
    return any(c.pingpong or seg[1] - seg[0] >= seconds * 0.5
               for c in clips.get(family, []) for seg in c.segments)


def _choose_clip(shot: Shot, options: list[Clip], seconds: float, rng: Rng) -> None:
    """Pick a cut-free source segment, an offset in it, a crop, a mirror and a tint."""
    fitting = [(c, k) for c in options for k, s in enumerate(c.segments)
               if c.pingpong or s[1] - s[0] >= seconds * 0.5]
    clip, k = fitting[rng.below(len(fitting))]
    lo, hi = clip.segments[k]
    shot.source, shot.content, shot.segment = clip.rel, clip.contents[k], (lo, hi)
    if clip.pingpong:
        shot.playback = "pingpong"
        shot.source_start_s = round(lo + rng.uniform(0, hi - lo), 3)
    else:
        shot.speed = round(min(1.0, (hi - lo) / seconds), 4)
        shot.source_start_s = round(lo + rng.uniform(0, hi - lo - seconds * shot.speed), 3)
    zoom = rng.uniform(1.0, 1.4)
    w = int(min(clip.width, clip.height * 16 / 9) / zoom) // 2 * 2
    h = int(w * 9 / 16) // 2 * 2
    x = int(rng.uniform(0, clip.width - w)) // 2 * 2
    y = int(rng.uniform(0, clip.height - h)) // 2 * 2
    shot.crop = (x, y, w, h)
    shot.hflip = rng.uniform(0, 1) < 0.5
    shot.hue_deg = round(rng.uniform(-30, 30), 1)
    shot.saturation = round(rng.uniform(0.75, 1.35), 2)
    shot.luma_gain = round(rng.uniform(0.85, 1.15), 2)
    shot.luma_offset = round(rng.uniform(-12, 12), 1)


def _pattern_params(rng: Rng) -> dict[str, Any]:
    kinds = ("bars", "rings", "checker", "waves")
    colours = []
    for _ in range(6):
        r, g, b = colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0.4, 1), rng.uniform(0.3, 1))
        colours.append([round(r * 255), round(g * 255), round(b * 255)])
    return {"kind": kinds[rng.below(len(kinds))], "colours": colours,
            "freq": round(rng.uniform(2, 9), 3), "angle": round(rng.uniform(0, 3.1416), 4),
            "centre": [round(rng.uniform(-0.5, 0.5), 3), round(rng.uniform(-0.3, 0.3), 3)],
            "pan": [round(rng.uniform(-0.12, 0.12), 4), round(rng.uniform(-0.06, 0.06), 4)]}


def plan_speech(spec: VideoSpec, snippets: list[Snippet], rng: Rng) -> list[tuple[int, int]]:
    """``(sample offset, snippet index)`` pairs, never overlapping, inside the video."""
    end = spec.duration_s * SAMPLE_RATE - SAMPLE_RATE // 2
    t = int(rng.uniform(0.5, 2.0) * SAMPLE_RATE)
    placed: list[tuple[int, int]] = []
    previous = -1
    while True:
        k = rng.below(len(snippets) - 1)
        k = k + 1 if k >= previous >= 0 else k  # never the same sentence twice in a row
        length = len(snippets[k].samples)
        if t + length > end:
            return placed
        placed.append((t, k))
        previous = k
        t += length + int(rng.uniform(*spec.speech_gap_s) * SAMPLE_RATE)


# ---------------------------------------------------------------------------------- rendering

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


# ------------------------------------------------------------------------------------ writing

def mix_audio(spec: VideoSpec, shots: list[Shot], background: np.ndarray,
              snippets: list[Snippet], speech: list[tuple[int, int]]) -> np.ndarray:
    """Mono mix: a quiet background segment per shot (faded at cuts) plus the speech."""
    total = spec.duration_s * SAMPLE_RATE
    out = np.zeros(total, np.float32)
    fade = SAMPLE_RATE // 100
    for shot in shots:
        a = shot.start_frame * SAMPLE_RATE // FPS
        b = min(total, (shot.start_frame + shot.n_frames) * SAMPLE_RATE // FPS)
        first = int(shot.background_offset_s * SAMPLE_RATE)
        piece = background.take(np.arange(first, first + b - a), mode="wrap") * BACKGROUND_GAIN
        ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
        piece[:fade] *= ramp
        piece[-fade:] *= ramp[::-1]
        out[a:b] += piece
    for at, k in speech:
        samples = snippets[k].samples
        out[at:at + len(samples)] += samples
    return np.clip(out, -1.0, 1.0)


def write_video(path: Path, fmt: Format, shots: list[Shot], frames: FrameSource,
                audio: np.ndarray) -> None:
    """Encode the shots and the audio, interleaved shot by shot, to ``path`` (via a temp name)."""
    tmp = path.with_name(path.stem + ".part.mp4")
    with av.open(str(tmp), "w", format="mp4") as out:
        video = out.add_stream("libx264", rate=FPS, options={
            "preset": fmt.preset, "crf": str(fmt.crf), "x264-params": "keyint=150:min-keyint=15"})
        video.width, video.height, video.pix_fmt = fmt.width, fmt.height, "yuv420p"
        video.codec_context.thread_count = X264_THREADS
        sound = out.add_stream("aac", rate=SAMPLE_RATE, layout="stereo",
                               options={"aac_coder": "fast"})  # twoloop: half the speed
        sound.bit_rate = 128_000
        written = 0
        for shot in shots:
            for k, frame in enumerate(shot_frames(shot, fmt, frames)):
                frame.pts, frame.time_base = shot.start_frame + k, Fraction(1, FPS)
                out.mux(video.encode(frame))
            until = (shot.start_frame + shot.n_frames) * SAMPLE_RATE // FPS
            written = _write_audio(out, sound, audio, written, until)
        out.mux(video.encode(None))
        _write_audio(out, sound, audio, written, len(audio))
        out.mux(sound.encode(None))
    tmp.replace(path)


def _write_audio(out: Any, stream: Any, audio: np.ndarray, start: int, end: int) -> int:
    for a in range(start, end, 1024):
        block = audio[a:min(a + 1024, end)]
        frame = av.AudioFrame.from_ndarray(np.stack([block, block]), format="fltp",
                                           layout="stereo")
        frame.sample_rate, frame.pts, frame.time_base = SAMPLE_RATE, a, Fraction(1, SAMPLE_RATE)
        out.mux(stream.encode(frame))
    return max(start, end)


_CLIP_ONLY = ("source_start_s", "speed", "playback", "segment", "crop", "hflip", "hue_deg",
              "saturation", "luma_gain", "luma_offset")


def ground_truth(spec: VideoSpec, fmt: Format, small: bool, shots: list[Shot],
                 snippets: list[Snippet], speech: list[tuple[int, int]]) -> dict[str, Any]:
    cuts = [{"frame": s.start_frame, "time_s": round(s.start_frame / FPS, 4), "type": "hard",
             "from_shot": s.index - 1, "to_shot": s.index} for s in shots[1:]]
    shot_rows = []
    for s in shots:
        row = {k: v for k, v in asdict(s).items()
               if k not in (_CLIP_ONLY if s.family == "pattern" else ("pattern",))}
        row.update(start_s=round(s.start_frame / FPS, 4),
                   end_s=round((s.start_frame + s.n_frames) / FPS, 4),
                   end_frame=s.start_frame + s.n_frames - 1)
        shot_rows.append(row)
    return {
        "schema": "w1-suite-gt/1",
        "file": f"{spec.name}.mp4",
        "workload": "W1-small" if small else "W1",
        "look_alike_of": spec.look_alike,
        "generator": {"script": "scripts/make_w1_suite.py", "argv": ["--small"] if small else [],
                      "seed": spec.seed, "pyav": av.__version__,
                      "libavcodec": ".".join(map(str, av.library_versions["libavcodec"])),
                      "x264": {"preset": fmt.preset, "crf": fmt.crf, "threads": X264_THREADS}},
        "video": {"width": fmt.width, "height": fmt.height, "fps": FPS,
                  "duration_s": float(spec.duration_s), "n_frames": spec.duration_s * FPS,
                  "codec": "h264"},
        "audio": {"sample_rate": SAMPLE_RATE, "channels": 2, "codec": "aac"},
        "cuts": cuts,
        "shots": shot_rows,
        "transcript": [_speech_row(i, at, snippets[k]) for i, (at, k) in enumerate(speech)],
        "notes": [
            "cut.frame = index (0-based) of the first frame of the new shot; time_s = frame / fps",
            "shots are cut-free source segments (source cuts and fades avoided) or patterns; "
            "crop is x, y, w, h in source pixels, then scale, hflip, hue, luma gain/offset",
            "transcript start/end = placement + the sentence's extent: GRID, 20 ms windows within "
            "20 dB of the loudest; espeak-ng, the synthetic clip's GT; words where the source "
            "has an alignment (GRID swwp2s)",
            "background: Big Buck Bunny soundtrack (no speech) at -12 dB, a new offset per shot",
        ],
    }


def _speech_row(index: int, at: int, snippet: Snippet) -> dict[str, Any]:
    t = at / SAMPLE_RATE
    row: dict[str, Any] = {
        "index": index, "start_s": round(t + snippet.speech_start_s, 3),
        "end_s": round(t + snippet.speech_end_s, 3), "placed_at_s": round(t, 4),
        "text": snippet.text, "source": snippet.source}
    if snippet.words:
        row["words"] = [{"start": round(t + a, 3), "end": round(t + b, 3), "text": w}
                        for a, b, w in snippet.words]
    return row


# ----------------------------------------------------------------------------------------- cli

def build(out_dir: Path, media: Path, *, small: bool = False, only: Sequence[str] = (),
          jobs: int = 1) -> list[Path]:
    """Build the suite (or the named videos of it) into ``out_dir``; returns the video paths.

    ``jobs`` > 1 builds videos in parallel processes (for many-core hosts; x264 keeps its own
    fixed thread count, so the files are the same either way).
    """
    specs = SMALL if small else FULL
    unknown = set(only) - {s.name for s in specs}
    if unknown:
        raise SystemExit(f"unknown video(s) {sorted(unknown)}; known: {[s.name for s in specs]}")
    chosen = [s for s in specs if not only or s.name in only]
    out_dir.mkdir(parents=True, exist_ok=True)
    if jobs <= 1:
        return [build_one(spec, out_dir, media, small) for spec in chosen]
    with ProcessPoolExecutor(min(jobs, len(chosen)), initializer=_log_to_stderr) as pool:
        one = functools.partial(build_one, out_dir=out_dir, media=media, small=small)
        return list(pool.map(one, chosen))


@functools.cache
def _sources(media: Path) -> tuple[dict[str, list[Clip]], np.ndarray, list[Snippet],
                                   FrameSource]:
    return discover_clips(media), load_background(media), load_snippets(media), FrameSource(media)


def build_one(spec: VideoSpec, out_dir: Path, media: Path, small: bool) -> Path:
    """Plan, render and encode one video and write its ground truth beside it."""
    started = time.perf_counter()
    clips, background, snippets, frames = _sources(media)
    fmt = SMALL_FORMAT if small else FULL_FORMAT
    rng = Rng(spec.seed)
    shots = plan_shots(spec, clips, rng, len(background) / SAMPLE_RATE)
    speech = plan_speech(spec, snippets, rng)
    audio = mix_audio(spec, shots, background, snippets, speech)
    path = out_dir / f"{spec.name}.mp4"
    write_video(path, fmt, shots, frames, audio)
    gt = ground_truth(spec, fmt, small, shots, snippets, speech)
    path.with_suffix(".gt.json").write_text(json.dumps(gt, indent=1) + "\n")
    log.info("%s: %d s, %d scenes, %d sentences, %.1f MB in %.1f s", path.name,
             spec.duration_s, len(shots), len(speech), path.stat().st_size / 1e6,
             time.perf_counter() - started)
    return path


def _log_to_stderr() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")


def _default_media() -> Path:
    shared = os.environ.get("SCENESCRIBE_SHARED")
    root = Path(shared) if shared else Path(__file__).resolve().parents[2] / "shared"
    return root / "media"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for videos and GT")
    parser.add_argument("--small", action="store_true", help="640x360, 20-30 s videos for CPU")
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="build only this video (repeatable), e.g. w1_sitcom")
    parser.add_argument("--media", type=Path, default=_default_media(),
                        help="the shared media folder (default: ../shared/media)")
    parser.add_argument("--jobs", type=int, default=1, help="videos built in parallel")
    args = parser.parse_args(argv)
    _log_to_stderr()
    started = time.perf_counter()
    paths = build(args.out, args.media, small=args.small, only=args.only, jobs=args.jobs)
    log.info("built %d video(s) into %s in %.1f s", len(paths), args.out,
             time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
