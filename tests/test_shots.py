"""Shot detection: each backend against the ground truth of ../shared/media, and the rules that
turn cuts into scenes. Backends are created through the registry and their cuts go through
``cuts_to_scenes``, exactly as the pipeline does."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from conftest import ground_truth, media
from scenescribe import registry
from scenescribe.media import iter_frames, probe
from scenescribe.options import ShotOptions
from scenescribe.progress import NullProgress
from scenescribe.records import Scene, VideoInfo
from scenescribe.shots import Cut, cuts_to_scenes

CLIPS = {"bbb": "real/big_buck_bunny_0_30", "synthetic": "synthetic/synthetic_cuts_speech"}
CLIP_FILES = {"bbb": "real/big_buck_bunny_0_30.webm",
              "synthetic": "synthetic/synthetic_cuts_speech.mp4"}
# (backend, clip) pairs that meet the ground truth in full: every hard cut within one frame, no
# false cut. "content" on the synthetic clip is tested apart (documented limitation).
MEETS_GROUND_TRUTH = [("adaptive", "bbb"), ("adaptive", "synthetic"), ("content", "bbb"),
                      ("hsvcut", "bbb"), ("hsvcut", "synthetic"),
                      pytest.param("transnetv2", "bbb", marks=pytest.mark.slow),
                      pytest.param("transnetv2", "synthetic", marks=pytest.mark.slow)]

_detectors: dict[str, Any] = {}
_results: dict[tuple[str, str], tuple[VideoInfo, list[Cut], list[Scene]]] = {}


def options(name: str) -> ShotOptions:
    """Default options; ``content`` keeps the 0.6 s minimum scene it was tuned with: at the
    0.2 s default its flash filter no longer holds the jump of bbb's fade-in at frame 9."""
    return ShotOptions(backend=name, min_scene_len=0.6 if name == "content" else 0.2)


def detector(name: str) -> Any:
    """One loaded backend per name for the whole module (TransNetV2 takes seconds to load)."""
    if name not in _detectors:
        _detectors[name] = registry.create(name, "shots", options=options(name),
                                           device="cpu", model_dir=None)
        _detectors[name].load()
    return _detectors[name]


def detect(name: str, clip: str) -> tuple[VideoInfo, list[Cut], list[Scene]]:
    """Cuts and scenes with default options, computed once per (backend, clip)."""
    if (name, clip) not in _results:
        info = probe(media(CLIP_FILES[clip]))
        cuts = detector(name).detect(info, NullProgress())
        _results[name, clip] = info, cuts, cuts_to_scenes(info, cuts, options(name))
    return _results[name, clip]


def hard_cuts(clip: str) -> list[dict[str, Any]]:
    return [c for c in ground_truth(CLIPS[clip] + ".gt.json")["cuts"] if c["type"] == "hard"]


def boundaries(scenes: list[Scene]) -> list[int]:
    return [s.start_frame for s in scenes[1:]]


@pytest.mark.parametrize(("backend", "clip"), MEETS_GROUND_TRUTH)
def test_every_hard_cut_found_and_no_false_cut(backend: str, clip: str) -> None:
    info, cuts, scenes = detect(backend, clip)
    truth = hard_cuts(clip)
    found = boundaries(scenes)
    missed = [c["frame"] for c in truth if not any(abs(f - c["frame"]) <= 1 for f in found)]
    false = [f for f in found if not any(abs(f - c["frame"]) <= 1 for c in truth)]
    assert not missed and not false, f"{backend} on {clip}: missed {missed}, false {false}"
    # Times come from timestamps: each boundary's time is the matched cut's, within one frame.
    for scene in scenes[1:]:
        gt = min(truth, key=lambda c: abs(c["frame"] - scene.start_frame))
        assert scene.start == pytest.approx(gt["time_s"], abs=1.0 / info.fps + 0.005)
    assert scenes[0].start == 0.0 and scenes[-1].end == pytest.approx(info.duration)
    assert [c.frame for c in cuts] == sorted(c.frame for c in cuts)


@pytest.mark.parametrize("backend", ["adaptive", "content", "hsvcut",
                                     pytest.param("transnetv2", marks=pytest.mark.slow)])
def test_bbb_fade_in_and_flapping_bird_are_not_cuts(backend: str) -> None:
    _, cuts, _ = detect(backend, "bbb")
    # Raw cuts, before cuts_to_scenes' min-length rule could hide one inside the fade.
    assert not [c.frame for c in cuts if 8 <= c.frame <= 49 or 425 <= c.frame <= 437]


def test_content_splits_only_the_cellular_automaton_shots() -> None:
    """ContentDetector's fixed threshold cannot tell the synthetic clip's automaton steps (every
    5 frames, scores 28-46) from cuts without missing real ones; they are its only extra cuts."""
    _, _, scenes = detect("content", "synthetic")
    truth = [c["frame"] for c in hard_cuts("synthetic")]
    found = boundaries(scenes)
    assert all(any(abs(f - t) <= 1 for f in found) for t in truth)
    extra = [f for f in found if all(abs(f - t) > 1 for t in truth)]
    assert all(400 < f < 520 or 630 < f < 750 for f in extra), extra  # "life", "cellauto"


def test_default_backend_finds_all_cuts_of_two_hour_video() -> None:
    from scenescribe.pipeline import backend_name

    options = ShotOptions()
    name = backend_name("shots", options.backend, "cpu")
    info = probe(media("bad_inputs/long_64x36_1fps.mp4"))
    cuts = registry.create(name, "shots", options=options, device="cpu",
                           model_dir=None).detect(info, NullProgress())
    scenes = cuts_to_scenes(info, cuts, options)
    assert [(s.start_frame, s.start) for s in scenes[1:]] == [
        (t, pytest.approx(float(t))) for t in range(60, 7200, 60)]
    assert len(scenes) == 120 and scenes[-1].end == pytest.approx(7200.0)


# A small variable-frame-rate clip: 3 flat-colour shots, frames 50 ms apart, then 20 ms apart.
VFR_CUTS = {30: 1.5, 75: 3.3}  # frame -> true time; frame / average fps would give 1.07, 2.68


def _vfr_pts_ms(i: int) -> int:
    return 50 * i if i < 60 else 3000 + 20 * (i - 60)


@pytest.fixture(scope="module")
def vfr_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("shots") / "vfr.mp4"
    colours = [(220, 40, 40), (40, 200, 60), (30, 40, 110)]
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 128, 72, "yuv420p"
        stream.time_base = Fraction(1, 1000)
        stream.codec_context.time_base = Fraction(1, 1000)
        for i in range(120):
            shot = sum(i >= f for f in VFR_CUTS)
            img = np.full((72, 128, 3), colours[shot], np.uint8)
            img[:, :, :] += rng.integers(0, 6, img.shape, dtype=np.uint8)  # a little texture
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = _vfr_pts_ms(i), Fraction(1, 1000)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


@pytest.mark.parametrize("backend", ["adaptive", "content", "hsvcut",
                                     pytest.param("transnetv2", marks=pytest.mark.slow)])
def test_variable_frame_rate_cuts_carry_timestamps(backend: str, vfr_clip: Path) -> None:
    info = probe(vfr_clip)
    assert [round(f.time, 3) for f in iter_frames(vfr_clip)][58:62] == [2.9, 2.95, 3.0, 3.02]
    cuts = detector(backend).detect(info, NullProgress())
    assert [(c.frame, round(c.time, 3)) for c in cuts] == list(VFR_CUTS.items())


@pytest.mark.parametrize(("backend", "threshold"), [
    ("adaptive", 256.0), ("content", 256.0),
    pytest.param("transnetv2", 1.0, marks=pytest.mark.slow)])
def test_threshold_option_is_respected(backend: str, threshold: float, vfr_clip: Path) -> None:
    """A threshold above any score the backend can give finds nothing on a clip with cuts."""
    strict = registry.create(backend, "shots", options=ShotOptions(backend, threshold=threshold),
                             device="cpu", model_dir=None)
    strict.model = detector(backend).model  # the loaded model: only the options differ
    assert strict.detect(probe(vfr_clip), NullProgress()) == []


@dataclass
class _Task:
    description: str
    total: float | None
    done: float = 0.0
    closed: bool = False

    def advance(self, amount: float = 1.0) -> None:
        self.done += amount

    def close(self) -> None:
        self.closed = True


@dataclass
class _Recorder:
    tasks: list[_Task] = field(default_factory=list)

    def task(self, description: str, total: float | None = None) -> _Task:
        self.tasks.append(_Task(description, total))
        return self.tasks[-1]


def test_progress_counts_every_frame(vfr_clip: Path) -> None:
    progress = _Recorder()
    info = probe(vfr_clip)
    detector("adaptive").detect(info, progress)
    [task] = progress.tasks
    assert (task.description, task.total, task.done, task.closed) == (
        "shots", info.num_frames, 120, True)


def test_transnetv2_windows_match_the_reference_padding() -> None:
    """The streamed windows equal those the package's ``predict_frames`` builds from the whole
    video: 25 copies of the first frame, the frames, copies of the last, cut 100 long by 50."""
    from scenescribe.shots.transnetv2 import _windows

    for n in (1, 49, 50, 51, 75, 100, 137):
        frames = [np.full((27, 48, 3), i, np.uint8) for i in range(n)]
        end_pad = 25 + 50 - (n % 50 if n % 50 else 50)
        padded = [frames[0]] * 25 + frames + [frames[-1]] * end_pad
        want = [np.stack(padded[p:p + 100]) for p in range(0, len(padded) - 99, 50)]
        got = list(_windows(iter(frames)))
        assert len(got) == len(want) == -(-n // 50)
        assert all(np.array_equal(g, w) for g, w in zip(got, want, strict=True))


def test_transnetv2_transitions_become_cuts_after_the_run() -> None:
    from scenescribe.shots.transnetv2 import _Transitions

    probs = [0.9, 0.1, 0.0, 0.99, 0.0, 0.7, 0.8, 0.2, 0.0, 0.95]
    tracker = _Transitions(0.65)
    cuts = [c for i, p in enumerate(probs) if (c := tracker.update(p, i / 10)) is not None]
    # Frame 0 opens the video inside a transition (no shot before it); frame 9 is never closed.
    assert cuts == [Cut(4, 0.4), Cut(7, 0.7)]


@pytest.mark.slow
def test_transnetv2_leaves_torch_global_state_alone() -> None:
    """The package's constructor seeds the generators and turns on deterministic mode for the
    whole process; loading through scenescribe must undo both."""
    import torch

    state = torch.random.get_rng_state()
    deterministic = torch.are_deterministic_algorithms_enabled()
    fresh = registry.create("transnetv2", "shots", options=ShotOptions(backend="transnetv2"),
                            device="cpu", model_dir=None)
    fresh.load()
    assert fresh.model is not None and not fresh.model.training
    assert torch.are_deterministic_algorithms_enabled() == deterministic
    assert torch.equal(torch.random.get_rng_state(), state)
    fresh.unload()


# cuts_to_scenes: the min/max rules every backend shares.
VIDEO = VideoInfo("v.mp4", 1, "mp4", duration=10.0, has_video=True, width=64, height=36,
                  fps=10.0, num_frames=100)


def _spans(cuts: list[Cut], **options: float) -> list[tuple[int, int, float, float]]:
    scenes = cuts_to_scenes(VIDEO, cuts, ShotOptions(**options))  # type: ignore[arg-type]
    for a, b in itertools.pairwise(scenes):
        assert (a.end, a.end_frame) == (b.start, b.start_frame)  # scenes tile the video
    assert [s.index for s in scenes] == list(range(len(scenes)))
    return [(s.start_frame, s.end_frame, round(s.start, 3), round(s.end, 3)) for s in scenes]


def test_cuts_closer_than_min_scene_len_keep_the_earlier_shot_whole() -> None:
    cuts = [Cut(70, 7.0), Cut(33, 3.3), Cut(30, 3.0), Cut(3, 0.3)]  # unsorted on purpose
    assert _spans(cuts, min_scene_len=0.6) == [
        (0, 30, 0.0, 3.0), (30, 70, 3.0, 7.0), (70, 100, 7.0, 10.0)]
    assert _spans(cuts, min_scene_len=0.0) == [
        (0, 3, 0.0, 0.3), (3, 30, 0.3, 3.0), (30, 33, 3.0, 3.3), (33, 70, 3.3, 7.0),
        (70, 100, 7.0, 10.0)]


def test_short_final_shot_joins_the_one_before_and_late_cuts_are_ignored() -> None:
    cuts = [Cut(50, 5.0), Cut(97, 9.7), Cut(100, 10.0), Cut(120, 12.0)]
    assert _spans(cuts, min_scene_len=0.6) == [(0, 50, 0.0, 5.0), (50, 100, 5.0, 10.0)]


def test_no_cut_gives_one_scene_and_duplicates_collapse() -> None:
    assert _spans([]) == [(0, 100, 0.0, 10.0)]
    assert _spans([Cut(40, 4.0), Cut(40, 4.0)]) == [(0, 40, 0.0, 4.0), (40, 100, 4.0, 10.0)]


def test_max_scene_len_splits_long_shots_into_equal_parts() -> None:
    assert _spans([], max_scene_len=4.0) == [
        (0, 33, 0.0, 3.333), (33, 67, 3.333, 6.667), (67, 100, 6.667, 10.0)]
    # Only a shot over the limit is split; one exactly at the limit stays whole.
    assert _spans([Cut(60, 6.0)], max_scene_len=4.0) == [
        (0, 30, 0.0, 3.0), (30, 60, 3.0, 6.0), (60, 100, 6.0, 10.0)]
    assert _spans([Cut(20, 2.0)], max_scene_len=4.0) == [
        (0, 20, 0.0, 2.0), (20, 60, 2.0, 6.0), (60, 100, 6.0, 10.0)]


def test_building_transnetv2_imports_no_compiler() -> None:
    """Switching torch's deterministic mode (the package's constructor does) imports
    ``torch._dynamo`` and ``torch._inductor``: 7.5 s on the H200 before the first shots. The
    build leaves the switch out, in a fresh interpreter as in a run."""
    import subprocess
    import sys

    code = ("import sys, torch\n"
            "from scenescribe.shots.transnetv2 import _build_model\n"
            "model = _build_model('cpu')\n"
            "assert not model.training\n"
            "print(sorted(m for m in ('torch._dynamo', 'torch._inductor') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
