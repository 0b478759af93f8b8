"""The chosen defaults against the ground truth of every clip of the shot corpus, at ±1 frame.

The corpus is every ``*.gt.json`` under ``benchmarks/shot_corpus/`` (plus folders named in
``$SCENESCRIBE_SHOT_GT_DIRS``) and the ground-truth files of ../shared/media; a clip that is not
on this machine is skipped with the reason. Each clip must come out exactly as measured: every
hard cut found and no false cut, except the deviations listed in ``KNOWN`` (each with why), so
a regression and an improvement both show here. Over all clips present, pooled hard-cut F1 must
reach issue 10's targets (CPU 0.92, GPU 0.95).
"""

from __future__ import annotations

from typing import Any

import pytest

from scenescribe import registry
from scenescribe.media import probe
from scenescribe.options import ShotOptions
from scenescribe.pipeline import backend_name
from scenescribe.progress import NullProgress
from scenescribe.shots import cuts_to_scenes
from scenescribe.shots.evaluation import GroundTruth, Score, find_clip, load_corpus, pooled, score

CORPUS = load_corpus()
CPU = backend_name("shots", ShotOptions().backend, "cpu")
GPU = backend_name("shots", ShotOptions().backend, "cuda")

# (backend, clip) -> (hard cuts missed, false cuts), as measured; every other clip: none.
_CPU, _GPU = "hsvcut", "transnetv2-hsvcut"
KNOWN: dict[tuple[str, str], tuple[list[int], list[int]]] = {
    # Frame 2 (and frame 1) follow a black leader: a first scene shorter than min_scene_len.
    (_CPU, "transnetv2_test_music_video"): ([2], []),
    (_GPU, "transnetv2_test_music_video"): ([2], []),
    (_CPU, "vllama2_tv_street_selfdefence"): ([1], []),
    (_GPU, "vllama2_tv_street_selfdefence"): ([1], []),
    # TransNetV2 at 0.5 misses one cut of a fast trailer that hsvcut finds and TransNetV2's
    # confirmation (>= 0.02) then drops.
    (_GPU, "bf_sintel_trailer_480x204"): ([406], []),
    # A battle scene: cuts inside heavy motion and explosions; 1665 is a muzzle-flash frame;
    # 1689 is 2 frames before the end, shorter than min_scene_len.
    (_CPU, "bf_tears_of_steel_battle_70s"): ([1430, 1689], []),
    (_GPU, "bf_tears_of_steel_battle_70s"): ([1689], []),
    # Screencast: cuts between windows of the same colours (hsvcut's quiet-jump rule finds 4 of
    # the 6 its adaptive rule misses, and takes one page change for a cut); TransNetV2 finds most.
    (_CPU, "jh_gh_scoped_creds_screencast"): ([931, 1395], [1162]),
    (_GPU, "jh_gh_scoped_creds_screencast"): ([931, 1395], [1162]),
    # 1922 black-and-white film: every cut found on brightness; two jumps of the film's flicker
    # over still frames pass the quiet-jump rule.
    (_CPU, "nosferatu_1922_excerpt"): ([], [566, 1082]),
    (_GPU, "nosferatu_1922_excerpt"): ([], [566]),
    # An ad: a cut inside the TV picture under a caption that stays; at 112 the caption snaps in
    # (hsvcut's block check: part of the picture stays as it was).
    (_CPU, "gtv_for_bigger_meltdowns_ad"): ([156], []),
    (_GPU, "gtv_for_bigger_meltdowns_ad"): ([156], []),
    # Three cuts 2-3 frames apart inside flash transitions: shorter than min_scene_len.
    (_CPU, "pexels_vertical_edit_flash_transitions"): ([52, 55, 57], []),
    (_GPU, "pexels_vertical_edit_flash_transitions"): ([52, 55, 57], []),
    # A 12 fps phone video: cuts between similar snowy shots inside camera motion. (Its colour
    # jumps every 5 s leave brightness as it was: hsvcut's brightness floor drops them.)
    (_CPU, "vllava_snow_tubing_home_video"): ([447, 745, 783, 903, 981, 1448, 1595], []),
    (_GPU, "vllava_snow_tubing_home_video"): ([447, 745, 783, 903, 1448, 1595], []),
}

_results: dict[tuple[str, str], tuple[Score, Any]] = {}
_detectors: dict[str, Any] = {}


def _detect(backend: str, truth: GroundTruth) -> tuple[Score, Any]:
    if (backend, truth.name) not in _results:
        clip, why = find_clip(truth)
        if clip is None:
            pytest.skip(why)
        options = ShotOptions(backend=backend)
        if backend not in _detectors:
            _detectors[backend] = registry.create(backend, "shots", options=options,
                                                  device="cpu", model_dir=None)
        info = probe(clip)
        scenes = cuts_to_scenes(info, _detectors[backend].detect(info, NullProgress()), options)
        _results[backend, truth.name] = score([s.start_frame for s in scenes[1:]], truth), scenes
    return _results[backend, truth.name]


def _check(backend: str, truth: GroundTruth) -> None:
    result, scenes = _detect(backend, truth)
    assert (result.missed, result.false) == KNOWN.get((backend, truth.name), ([], [])), (
        f"{backend} on {truth.name}: missed {result.missed}, false {result.false}")
    assert [s.index for s in scenes] == list(range(len(scenes)))
    assert all(s.transition is not None for s in scenes[1:])


def _ids(truths: list[GroundTruth]) -> list[str]:
    return [t.name for t in truths]


def test_defaults_are_the_measured_ones() -> None:
    assert (CPU, GPU) == ("hsvcut", "transnetv2-hsvcut")


@pytest.mark.parametrize("truth", CORPUS, ids=_ids(CORPUS))
def test_cpu_default_meets_the_ground_truth(truth: GroundTruth) -> None:
    _check(CPU, truth)


@pytest.mark.slow
@pytest.mark.parametrize("truth", CORPUS, ids=_ids(CORPUS))
def test_gpu_default_meets_the_ground_truth(truth: GroundTruth) -> None:
    _check(GPU, truth)


# Issue 10's targets: 0.92 for the CPU default (0.962 on the 26-clip corpus), 0.95 for the GPU
# default (0.966).
@pytest.mark.parametrize(("backend", "target"), [
    (CPU, 0.92), pytest.param(GPU, 0.95, marks=pytest.mark.slow)])
def test_pooled_hard_cut_f1_reaches_the_target(backend: str, target: float) -> None:
    present = [t for t in CORPUS if find_clip(t)[0] is not None]
    if not any(t.cuts for t in present):
        pytest.skip("no clip with cuts on this machine")
    total = pooled(_detect(backend, t)[0] for t in present)
    assert total.f1 >= target, f"{backend}: pooled F1 {total.f1:.3f} over {len(present)} clips"
