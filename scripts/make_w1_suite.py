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
import colorsys
import functools
import json
import logging
import os
import random
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

# The sibling modules import as top-level modules: this folder is on sys.path when the script runs
# directly; a loader that imports it from its file (the tests) needs it added.
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from w1_audio import (  # noqa: E402
    Snippet,
    load_background,
    load_snippets,
    mix_audio,
)
from w1_sources import (  # noqa: E402
    FPS,
    SAMPLE_RATE,
    Clip,
    Format,
    FrameSource,
    Shot,
    discover_clips,
    grid_sentence,
    shot_frames,
)

__all__ = ["FAMILIES", "FPS", "FULL", "SAMPLE_RATE", "SMALL", "Clip", "Format", "Rng", "Shot",
           "Snippet", "VideoSpec", "build", "build_one", "discover_clips", "grid_sentence",
           "main", "plan_shots", "plan_speech"]

log = logging.getLogger("scenescribe.w1_suite")

MIN_SCENE_S = 2.0
X264_THREADS = 2  # fixed: x264's output depends on its thread count
FAMILIES = ("bbb", "car", "person", "grid", "pattern")


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


# ------------------------------------------------------------------------------------ writing

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
