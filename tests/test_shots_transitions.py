"""Gradual transitions: found, placed at their middle and recorded in the scene record."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from scenescribe import registry
from scenescribe.media import probe
from scenescribe.options import ShotOptions
from scenescribe.progress import NullProgress
from scenescribe.records import Scene, SceneRecord, Transition, VideoInfo
from scenescribe.shots import Cut, cuts_to_scenes
from scenescribe.shots.ensemble import merge
from scenescribe.shots.transnetv2 import _Transitions


def test_transition_round_trips_and_old_records_read() -> None:
    fade = Transition("fade_in", 4.0, 4.5, 100, 112)
    record = SceneRecord(Scene(1, 4.25, 9.0, 106, 225, fade))
    d = record.to_dict()
    assert d["transition"] == {"type": "fade_in", "start": 4.0, "end": 4.5, "start_frame": 100,
                               "end_frame": 112}
    assert SceneRecord.from_dict(d) == record and fade.gradual
    del d["transition"]  # a record written before transitions were recorded
    assert SceneRecord.from_dict(d).scene.transition is None
    assert not Transition("hard", 4.0, 4.0, 100, 100).gradual
    with pytest.raises(ValueError, match="bad frame span"):
        Transition("dissolve", 1.0, 2.0, 30, 20)


VIDEO = VideoInfo("v.mp4", 1, "mp4", duration=10.0, has_video=True, width=64, height=36,
                  fps=10.0, num_frames=100)


def test_scenes_record_how_they_begin() -> None:
    dissolve = Transition("gradual", 4.0, 5.0, 40, 50)
    cuts = [Cut(20, 2.0), Cut(45, 4.5, dissolve)]
    scenes = cuts_to_scenes(VIDEO, cuts, ShotOptions(max_scene_len=4.0))
    assert [(s.start_frame, s.transition) for s in scenes] == [
        (0, None), (20, Transition("hard", 2.0, 2.0, 20, 20)), (45, dissolve),
        (73, None)]  # the last shot (5.5 s) is split in two: the split begins with no transition


def test_transnetv2_runs_become_cuts_dissolves_and_nothing_at_the_edges() -> None:
    def boundaries(probs: list[float], dark: list[bool]) -> list[Cut]:
        tracker = _Transitions(0.5)
        for i, (p, d) in enumerate(zip(probs, dark, strict=True)):
            tracker.update(p, i / 10, d)
        return tracker.finish()

    lit = [False] * 40
    # One frame above the threshold: a hard cut at the next frame. Six: a dissolve, boundary
    # at the middle of the run, its span recorded.
    probs = [0.0] * 40
    probs[9] = 0.9
    probs[20:26] = [0.6] * 6
    cuts = boundaries(probs, lit)
    assert cuts[0] == Cut(10, 1.0)
    assert (cuts[1].frame, cuts[1].transition) == (
        23, Transition("gradual", 2.0, 2.6, 20, 26))
    # A fade in from black opening the video is no boundary; a cut out of black is one.
    opening = [True] * 5 + [False] * 35
    probs = [0.0] * 40
    probs[5:11] = [0.7] * 6
    assert boundaries(probs, opening) == []
    probs = [0.0] * 40
    probs[4] = 0.99
    assert boundaries(probs, opening) == [Cut(5, 0.5)]
    # A boundary less than a second before the black that ends the video is its fade out.
    closing = [False] * 30 + [True] * 10
    probs = [0.0] * 40
    probs[24] = 0.9
    assert boundaries(probs, closing) == []
    probs[10] = 0.9
    assert boundaries(probs, closing) == [Cut(11, 1.1)]


def test_merge_keeps_the_second_opinion_only_where_the_first_has_none() -> None:
    dissolve = Transition("gradual", 5.0, 6.0, 50, 60)
    first = [Cut(20, 2.0), Cut(55, 5.5, dissolve)]
    second = [Cut(21, 2.1), Cut(52, 5.2), Cut(80, 8.0)]
    assert merge(first, second) == [Cut(20, 2.0), Cut(55, 5.5, dissolve), Cut(80, 8.0)]


# A clip with every kind of transition: it opens with a fade in from black, fades out to black
# and in again between two shots, cuts hard, and ends with a fade out to black.
SHOTS = [("black", 8), ("fade_in_open", 12), ("A", 40), ("fade_out", 12), ("black", 8),
         ("fade_in", 12), ("B", 40), ("C", 40), ("fade_out_end", 12), ("black", 8)]
COLOURS = {"A": (200, 60, 40), "B": (40, 120, 210), "C": (60, 200, 80)}


def _frame(kind: str, k: int, n: int, rng: np.random.Generator) -> np.ndarray:
    levels = {"fade_in_open": ("A", (k + 1) / (n + 1)), "fade_out": ("A", 1 - (k + 1) / (n + 1)),
              "fade_in": ("B", (k + 1) / (n + 1)), "fade_out_end": ("C", 1 - (k + 1) / (n + 1))}
    colour, level = levels.get(kind, (kind, 1.0))
    base = np.zeros(3) if colour == "black" else np.array(COLOURS[colour], float)
    img = np.empty((72, 128, 3))
    img[:] = base * level
    img[:, :64] *= 0.7  # two halves, so the picture has some structure
    noise = rng.integers(0, 4, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def transitions_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("transitions") / "fades.mp4"
    rng = np.random.default_rng(1)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 128, 72, "yuv420p"
        for kind, n in SHOTS:
            for k in range(n):
                out.mux(stream.encode(av.VideoFrame.from_ndarray(_frame(kind, k, n, rng),
                                                                 format="rgb24")))
        out.mux(stream.encode(None))
    return path


def test_hsvcut_places_fades_at_their_middle_and_ignores_the_edges(
        transitions_clip: Path) -> None:
    starts = {}
    at = 0
    for kind, n in SHOTS:
        starts.setdefault(kind, at)
        at += n
    info = probe(transitions_clip)
    detector = registry.create("hsvcut", "shots", options=ShotOptions("hsvcut"))
    scenes = cuts_to_scenes(info, detector.detect(info, NullProgress()), ShotOptions())
    begins = [(s.start_frame, s.transition.type if s.transition else None) for s in scenes]
    assert [t for _, t in begins] == [None, "fade_out", "fade_in", "hard"], begins
    fade_out, fade_in, hard = scenes[1], scenes[2], scenes[3]
    # Each fade's boundary lies inside the fade, near its middle; its span is recorded.
    for scene, kind in ((fade_out, "fade_out"), (fade_in, "fade_in")):
        first = starts[kind]
        t = scene.transition
        assert t is not None and first - 1 <= t.start_frame and t.end_frame <= first + 12 + 1
        assert abs(scene.start_frame - (first + 6)) <= 2
    assert hard.start_frame == starts["C"]
