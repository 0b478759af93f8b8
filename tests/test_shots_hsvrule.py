"""``hsvcut``'s checks on frames made here: black-and-white cuts, colour-only jumps, partial
changes. Each runs the real detector (``cuts_from_frames``) or the real measure, and compares the
tuning before these checks (``PREVIOUS``) where the difference is the point."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest

from scenescribe import registry
from scenescribe.media import DecodedFrame
from scenescribe.options import ShotOptions
from scenescribe.shots.fast import HsvCutDetector
from scenescribe.shots.hsvrule import Tuning, _least_block_change

FPS = 25.0
H, W = 72, 128


def texture(seed: int, colour: bool = True) -> np.ndarray:
    """A smooth random picture (RGB uint8), colourful or grey."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (9, 16, 3 if colour else 1), dtype=np.uint8)
    big = cv2.resize(small, (W, H), interpolation=cv2.INTER_CUBIC)
    return big if colour else np.repeat(big[:, :, None], 3, axis=2)


def clip(pictures: list[np.ndarray], seed: int = 0) -> list[DecodedFrame]:
    """Frames of the pictures in turn, each with a little sensor noise, as a decoder gives."""
    rng = np.random.default_rng(seed)
    frames = []
    for i, picture in enumerate(pictures):
        noise = rng.integers(-2, 3, (*picture.shape[:2], 1))  # grey noise: hue stays put
        image = np.clip(picture.astype(np.int16) + noise, 0, 255).astype(np.uint8)
        frames.append(DecodedFrame(i, i / FPS, image))
    return frames


def detector(tuning: Tuning | None = None) -> HsvCutDetector:
    made = registry.create("hsvcut", "shots", options=ShotOptions("hsvcut"), device="cpu",
                           model_dir=None)
    if tuning is not None:
        made.__class__ = type("Tuned", (HsvCutDetector,), {"TUNING": tuning})
    return made


def cuts(frames: list[DecodedFrame], tuning: Tuning) -> list[int]:
    return [c.frame for c in detector(tuning).cuts_from_frames(frames, FPS)]


def test_black_and_white_cut_is_found_on_brightness() -> None:
    # Two grey shots: hue and saturation are 0 in both, so the old score was a third of the
    # brightness change (about 14 here, under min_content 18).
    dark = (texture(1, colour=False) * 0.25 + 60).astype(np.uint8)
    light = (texture(2, colour=False) * 0.25 + 100).astype(np.uint8)
    frames = clip([dark] * 20 + [light] * 20)
    assert cuts(frames, HsvCutDetector.TUNING) == [20]
    assert cuts(frames, HsvCutDetector.PREVIOUS) == []


def test_colour_only_jump_is_no_cut_but_a_lit_change_is() -> None:
    # A phone camera's white balance: every hue turns at once, brightness stays.
    scene = texture(3)
    hsv = cv2.cvtColor(scene, cv2.COLOR_RGB2HSV)
    hsv[:, :, 0] = (hsv[:, :, 0].astype(np.int16) + 60) % 180
    rebalanced = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    other = (texture(4) * 0.6).astype(np.uint8)  # another shot, darker
    frames = clip([scene] * 20 + [rebalanced] * 20 + [other] * 20)
    assert cuts(frames, HsvCutDetector.PREVIOUS) == [20, 40]
    assert cuts(frames, HsvCutDetector.TUNING) == [40]


def test_least_block_change_sees_a_partial_change_and_ignores_black_bars() -> None:
    a, b = texture(5), texture(6)
    hsv = [cv2.cvtColor(x, cv2.COLOR_RGB2HSV) for x in (a, b)]
    whole = _least_block_change(hsv[0], hsv[1])
    half = hsv[0].copy()
    half[:, : W // 2] = hsv[1][:, : W // 2]  # a caption or a flash over the left half
    assert whole > 10 and _least_block_change(hsv[0], half) < 1
    # Pillarboxed: black bars a quarter wide on each side, unchanged; the picture changes.
    boxed = [x.copy() for x in hsv]
    for x in boxed:
        x[:, : W // 4] = 0
        x[:, -W // 4:] = 0
    assert _least_block_change(*boxed) == pytest.approx(whole, rel=0.5)


def test_tuning_is_part_of_the_cache_key() -> None:
    key = detector().cache_key()["tuning"]
    assert key["luma_min"] == HsvCutDetector.TUNING.luma_min > 0
    assert replace(HsvCutDetector.TUNING, luma_min=0) != HsvCutDetector.TUNING
