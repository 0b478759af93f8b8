"""TransNetV2 with ``hsvcut`` as a second opinion: the GPU default, ``transnetv2-hsvcut``.

TransNetV2 at its package threshold (0.5) places no false cut in the corpus but misses hard cuts
that a colour-change detector sees plainly: 23 of the music video's 130 (scored 0.03-0.5) and
5 of 7 in a fast, motion-blurred fight (Sintel). ``hsvcut`` finds those, and its own false cuts
(a one-frame jump in a camera tilt) are few because its histogram check already stands between
it and motion. So a boundary is any TransNetV2 boundary, plus any ``hsvcut`` boundary not within
``MERGE_FRAMES`` of one (nor inside a TransNetV2 gradual transition): the union, measured in
``benchmarks/bench_shot_accuracy.py``. Requiring TransNetV2 to score such a cut above a small
floor (0.01-0.05) gained nothing on the corpus and lost cuts it scores 0.

The two detectors decode the video each in their own pass: TransNetV2 wants 48x27 frames from
FFmpeg's scaler, as it was trained; ``hsvcut`` the decoder's planes shrunk by OpenCV. On a GPU
host TransNetV2's network is not the limit (thousands of frames per second); decoding is, and
``hsvcut`` spreads its pass over the cores (``segments``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from scenescribe.progress import Progress
from scenescribe.records import VideoInfo
from scenescribe.shots.base import Cut, ShotDetector

log = logging.getLogger("scenescribe.shots")

MERGE_FRAMES = 2  # an hsvcut boundary this close to a TransNetV2 one is the same boundary


class TransNetHsvDetector(ShotDetector):
    """The union of TransNetV2's boundaries and ``hsvcut``'s (module docstring)."""

    def _load(self) -> Any:
        from scenescribe import registry

        parts = {}
        for name in ("transnetv2", "hsvcut"):
            options = replace(self.options, backend=name,
                              threshold=self.options.threshold if name == "transnetv2" else None)
            parts[name] = registry.create(name, "shots", options=options, device=self.device,
                                          model_dir=self.model_dir)
            parts[name].load()
        return parts

    def unload(self) -> None:
        if self.model is not None:
            for part in self.model.values():
                part.unload()
        super().unload()

    def cache_key(self) -> dict[str, Any]:
        from scenescribe.shots.fast import HsvCutDetector, _asdict
        from scenescribe.shots.transnetv2 import TransNetV2ShotDetector, _library

        threshold = self.options.threshold
        return {**super().cache_key(), "library": _library(), "merge": MERGE_FRAMES,
                "threshold": TransNetV2ShotDetector.DEFAULT_THRESHOLD if threshold is None
                else threshold, "hsvcut": _asdict(HsvCutDetector.TUNING)}

    def detect(self, video: VideoInfo, progress: Progress) -> list[Cut]:
        self.load()
        cuts = merge(self.model["transnetv2"].detect(video, progress),
                     self.model["hsvcut"].detect(video, progress))
        log.debug("%s: %d cuts in %s", self.name, len(cuts), video.path)
        return cuts


def merge(primary: Sequence[Cut], second: Sequence[Cut]) -> list[Cut]:
    """``primary`` plus each cut of ``second`` that is not near one of them or inside one of
    their gradual transitions; in frame order."""
    def covered(cut: Cut) -> bool:
        for p in primary:
            if abs(p.frame - cut.frame) <= MERGE_FRAMES:
                return True
            t = p.transition
            if t is not None and t.start_frame - MERGE_FRAMES <= cut.frame <= t.end_frame:
                return True
        return False

    return sorted([*primary, *(c for c in second if not covered(c))], key=lambda c: c.frame)
