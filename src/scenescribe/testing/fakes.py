"""Fake backends of every kind: no model files, deterministic, and they count their calls.

``register_fakes()`` adds them to the registry under ``fake-*`` names, so orchestration tests
(cache keys, reuse, failures, locks) run through the real pipeline in a fraction of a second.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence

from scenescribe.captions.base import Captioner, CaptionRequest
from scenescribe.media.spool import FrameSpool
from scenescribe.objects.base import ObjectTracker
from scenescribe.objects.detected import FrameBoxes, VideoDetections
from scenescribe.progress import Progress
from scenescribe.records import Caption, ObjectSummary, Scene, SoundTag, VideoInfo, Word
from scenescribe.registry import Kind, ModelEntry, get_entry, register
from scenescribe.shots.base import Cut, ShotDetector
from scenescribe.sounds.base import SoundTagger
from scenescribe.speech.base import SpeechRecognizer, SpeechResult

CALLS: Counter[str] = Counter()  # backend name -> scenes (or files) it processed
CONTEXTS: defaultdict[str, list[str]] = defaultdict(list)  # captioner -> grounding it was given
LOADS: Counter[str] = Counter()
DETECTED: Counter[str] = Counter()  # object backend name -> ticks it detected


def reset() -> None:
    DETECTED.clear()
    CALLS.clear()
    CONTEXTS.clear()
    LOADS.clear()


class _Loads:
    def _load(self) -> object:
        LOADS[self.name] += 1  # type: ignore[attr-defined]
        if self.name == "fake-vlm-noload":  # type: ignore[attr-defined]
            raise ValueError("too many values to unpack (expected 4)")  # as a library bug would
        return True


class FakeShots(_Loads, ShotDetector):
    """A cut every second."""

    def detect(self, video: VideoInfo, progress: Progress, spool: FrameSpool | None = None,
               decoded: Callable[[], None] | None = None) -> list[Cut]:
        CALLS[self.name] += 1
        fps = video.fps or 25.0
        return [Cut(round(t * fps), float(t)) for t in range(1, int(video.duration))]


class FakeSpeech(_Loads, SpeechRecognizer):
    """Two words per second, named after the backend (so another backend says other words)."""

    def transcribe(self, video: VideoInfo, progress: Progress) -> SpeechResult:
        CALLS[self.name] += 1
        words = tuple(Word(i / 2, i / 2 + 0.4, f"{self.name}{i}") for i in range(int(video.duration * 2)))
        return SpeechResult(words, "en", 1.0)

    def _transcribe(self, video: VideoInfo, task: object) -> SpeechResult:
        raise AssertionError("transcribe is overridden")


class FakeSounds(_Loads, SoundTagger):
    def tag_scenes(self, video: VideoInfo, scenes: Sequence[Scene], progress: Progress,
                   audio: object = None) -> Iterator[tuple[int, list[SoundTag]]]:
        for scene in scenes:
            CALLS[self.name] += 1
            yield scene.index, [SoundTag(f"{self.name} hum", 0.9)]


class FakeObjects(_Loads, ObjectTracker):
    """One box per tick (class 0) and a ``person`` in every scene. ``CALLS`` counts the scenes
    tracked; ``DETECTED`` the ticks each backend detected."""

    def detect_frames(self, video: VideoInfo, ticks: Sequence[int], progress: Progress,
                      frames: object = None) -> Iterator[FrameBoxes]:
        self.load()
        for tick in ticks:
            DETECTED[self.name] += 1
            yield FrameBoxes.create(tick, tick / self.sample_fps, [[1, 1, 9, 9, 0.9, 0]], (16, 16))

    def track_detected(self, video: VideoInfo, scenes: Sequence[Scene], detected: VideoDetections,
                       progress: Progress) -> Iterator[tuple[int, list[ObjectSummary]]]:
        for scene in sorted(scenes, key=lambda s: s.start):
            if self.name == "fake-objects-crash" and CALLS[self.name]:
                raise RuntimeError("tracker fell over")
            CALLS[self.name] += 1
            yield scene.index, [ObjectSummary(detected.names.get(0, "?"), 1, 1, 0.9)]

    @property
    def names(self) -> dict[int, str]:
        return {0: "person"}


class FakeCaptioner(_Loads, Captioner):
    """Captions name the model and its grounding. ``fake-vlm-errors`` answers every scene with an
    error (as a refusing API does); ``fake-vlm-broken`` raises after its first caption;
    ``fake-vlm-noload`` raises a non-scenescribe error while loading."""

    def decoding(self) -> dict[str, object]:
        """The effective decoding settings, as real captioners report them once loaded."""
        return {"do_sample": False, "max_new_tokens": self.options.max_new_tokens}

    def caption(self, requests: Sequence[CaptionRequest],
                progress: Progress) -> Iterator[tuple[int, Caption]]:
        for n, request in enumerate(requests):
            CALLS[self.name] += 1
            CONTEXTS[self.name].append(request.context)
            if self.name == "fake-vlm-errors":
                yield request.index, Caption("", 0, error="HTTP 401: invalid API key")
                continue
            if self.name == "fake-vlm-broken" and n >= 1:
                raise ValueError("too many values to unpack (expected 4)")
            text = f"{self.name} saw {len(request.frames)} frames. {request.context}".strip()
            yield request.index, Caption(text, len(text.split()))


_FAKES: list[tuple[str, Kind, str]] = [
    ("fake-shots", "shots", "FakeShots"),
    ("fake-speech", "speech", "FakeSpeech"),
    ("fake-speech-b", "speech", "FakeSpeech"),
    ("fake-sounds", "sounds", "FakeSounds"),
    ("fake-sounds-b", "sounds", "FakeSounds"),
    ("fake-objects", "objects", "FakeObjects"),
    ("fake-objects-crash", "objects", "FakeObjects"),
    ("fake-vlm-a", "captioner", "FakeCaptioner"),
    ("fake-vlm-b", "captioner", "FakeCaptioner"),
    ("fake-vlm-errors", "captioner", "FakeCaptioner"),
    ("fake-vlm-broken", "captioner", "FakeCaptioner"),
    ("fake-vlm-noload", "captioner", "FakeCaptioner"),
]


def register_fakes() -> None:
    """Register every fake once (later calls do nothing)."""
    for name, kind, cls in _FAKES:
        try:
            get_entry(name)
        except Exception:
            register(ModelEntry(name, kind, f"scenescribe.testing.fakes:{cls}", "test",
                                description="test fake"))
