"""TransNetV2 with ``hsvcut`` as a second opinion: the GPU default, ``transnetv2-hsvcut``.

TransNetV2 at its package threshold (0.5) places almost no false cut in the corpus but misses
hard cuts that a colour-change detector sees plainly: 23 of the music video's 130 (it scores
them 0.03-0.5), 5 of 7 in a fast, motion-blurred fight (Sintel). ``hsvcut`` finds those but
takes some camera jolts of a home video for cuts, which TransNetV2 scores 0. So a boundary is
any TransNetV2 boundary, plus any ``hsvcut`` boundary that is not within ``MERGE_FRAMES`` of one
(nor inside a TransNetV2 gradual transition) and that TransNetV2 itself scores at least
``CONFIRM`` on the frames just before it (where it marks a cut). On the 26-clip corpus
(``benchmarks/bench_shot_accuracy.py``): pooled hard-cut F1 0.966, against 0.962 for ``hsvcut``
and 0.886 for TransNetV2 alone. With the earlier ``hsvcut`` (0.909): 0.960, the plain union
0.934, floors from 0.005 to 0.05 0.956-0.958.

Both halves read one decode of the video (``shared_decode``): each frame's planes go to
``hsvcut`` and the same frame shrunk to 48x27 to TransNetV2, as each detector's own pass gave
them (the cuts are those of the two passes). On a GPU host TransNetV2's network is not the limit
(thousands of frames per second); decoding is, so on many cores the decode is split into time
segments, one process each, and the network scores the stitched frame stream.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import numpy as np

from scenescribe.media.spool import FrameSpool
from scenescribe.progress import Progress
from scenescribe.records import VideoInfo
from scenescribe.shots.base import Cut, ShotDetector
from scenescribe.shots.fast import opening_fade_end

log = logging.getLogger("scenescribe.shots")

MERGE_FRAMES = 2  # an hsvcut boundary this close to a TransNetV2 one is the same boundary
CONFIRM = 0.02  # TransNetV2's least score, on the 3 frames before it, for an hsvcut boundary
THRESHOLD = 0.5  # TransNetV2's own threshold here: its package default


class TransNetHsvDetector(ShotDetector):
    """The union of TransNetV2's boundaries and ``hsvcut``'s (module docstring)."""

    concurrent_videos = True  # no state per call; the network is shared read-only
    loads_while_decoding = True
    lazy_imports = False  # no transformers: its build waits for builds, not imports
    _hsv: Any = None

    def _load(self) -> Any:
        parts = {"transnetv2": self._part("transnetv2"), "hsvcut": self._hsvcut()}
        for part in parts.values():
            part.load()
        return parts

    def _part(self, name: str) -> Any:
        from scenescribe import registry

        threshold = (self.threshold if name == "transnetv2" else None)
        options = replace(self.options, backend=name, threshold=threshold)
        return registry.create(name, "shots", options=options, device=self.device,
                               model_dir=self.model_dir)

    def _hsvcut(self) -> Any:
        """The hsvcut half: a rule with no model, so the shared decode can start before the
        network has loaded (``cuts_from_frames`` needs nothing ``load`` makes)."""
        if self._hsv is None:
            self._hsv = self._part("hsvcut")
        return self._hsv

    @property
    def threshold(self) -> float:
        t = self.options.threshold
        return THRESHOLD if t is None else float(t)

    def unload(self) -> None:
        if self.model is not None:
            for part in self.model.values():
                part.unload()
        super().unload()

    def cache_key(self) -> dict[str, Any]:
        from scenescribe.shots.fast import HsvCutDetector
        from scenescribe.shots.hsvrule import asdict
        from scenescribe.shots.transnetv2 import _library

        return {**super().cache_key(), "library": _library(), "merge": MERGE_FRAMES,
                "confirm": CONFIRM, "threshold": self.threshold,
                "hsvcut": asdict(HsvCutDetector.TUNING)}

    def detect(self, video: VideoInfo, progress: Progress, spool: FrameSpool | None = None,
               decoded: Callable[[], None] | None = None) -> list[Cut]:
        from scenescribe.shots.shared_decode import SharedDecode

        hsv = self._hsvcut()
        task = progress.task("shots", total=video.num_frames)
        # The opening fade's few seconds decode beside the shared pass.
        with ThreadPoolExecutor(1, thread_name_prefix="shots-opening") as pool:
            opening = pool.submit(opening_fade_end, str(video.path))
            try:
                with SharedDecode(hsv, video, task.advance, hsv.options.threads,
                                  hsv.options.workers, spool=spool,
                                  on_decoded=decoded) as decode:
                    self.load()  # the segments decode meanwhile (loads_while_decoding)
                    tn = self.model["transnetv2"]
                    scores = list(tn.frame_scores(video, frames=decode.frames()))
                    second = decode.cuts()
            finally:
                task.close()
            probs = np.array([p for p, _, _ in scores], dtype=np.float32)
            cuts = combine(tn.cuts_from_scores(scores), second, probs, opening.result())
        log.debug("%s: %d cuts in %s", self.name, len(cuts), video.path)
        return cuts


def combine(primary: Sequence[Cut], second: Sequence[Cut], probs: np.ndarray,
            opening_last: int = -1) -> list[Cut]:
    """TransNetV2's boundaries plus those of ``second`` it scores at least ``CONFIRM``; none
    inside the fade in from black that opens the video (frames up to ``opening_last``)."""
    confirmed = [c for c in second
                 if probs[max(0, c.frame - 2):c.frame + 1].max(initial=0.0) >= CONFIRM]
    return [c for c in merge(primary, confirmed) if c.frame > opening_last]


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
