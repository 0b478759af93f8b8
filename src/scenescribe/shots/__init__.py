"""Shot detection: backends produce cuts; this module turns cuts into scenes.

``cuts_to_scenes`` applies the options every backend shares: merging shots shorter than
``min_scene_len`` and splitting those longer than ``max_scene_len``.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

from scenescribe.options import ShotOptions
from scenescribe.records import Scene, VideoInfo
from scenescribe.shots.base import Cut, ShotDetector

__all__ = ["Cut", "ShotDetector", "cuts_to_scenes"]


def cuts_to_scenes(video: VideoInfo, cuts: Sequence[Cut], options: ShotOptions) -> list[Scene]:
    """Scenes covering ``[0, duration)`` from cut points, after min-length and max-length rules."""
    fps = video.fps or 25.0
    total_frames = max(video.num_frames, 1)
    bounds = [Cut(0, 0.0)]
    for cut in sorted(cuts, key=lambda c: c.frame):
        if cut.frame <= bounds[-1].frame or cut.time >= video.duration:
            continue
        if cut.time - bounds[-1].time < options.min_scene_len:
            continue  # too close to the previous boundary: keep the earlier shot whole
        bounds.append(cut)
    end = Cut(max(total_frames, bounds[-1].frame + 1), video.duration)
    # A final shot shorter than the minimum joins the one before it.
    if len(bounds) > 1 and end.time - bounds[-1].time < options.min_scene_len:
        bounds.pop()
    cuts_kept = set(bounds[1:])
    spans = list(pairwise([*bounds, end]))
    if options.max_scene_len > 0:
        spans = [piece for span in spans for piece in _split(span, options.max_scene_len, fps)]
    # Scenes record the cut they begin with; the first scene and split pieces begin with none.
    return [Scene(i, a.time, b.time, a.frame, b.frame, a.record() if a in cuts_kept else None)
            for i, (a, b) in enumerate(spans)]


def _split(span: tuple[Cut, Cut], max_len: float, fps: float) -> list[tuple[Cut, Cut]]:
    """Split an overlong shot into equal parts no longer than ``max_len`` seconds."""
    start, end = span
    length = end.time - start.time
    parts = int(-(-length // max_len))  # ceil
    if parts <= 1:
        return [span]
    points = [start]
    for k in range(1, parts):
        t = start.time + length * k / parts
        points.append(Cut(start.frame + round((t - start.time) * fps), t))
    points.append(end)
    return list(pairwise(points))
