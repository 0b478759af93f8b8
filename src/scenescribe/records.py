"""Typed records of the pipeline. Times are seconds; spans are half-open ``[start, end)``.

Every record is a frozen dataclass validated on creation with explicit ``to_dict``/``from_dict``.
``SCHEMA_VERSION`` is written into each scene line; ``from_dict`` reads every earlier version.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

SCHEMA_VERSION = 1


def _check_span(kind: str, start: float, end: float) -> None:
    if not (math.isfinite(start) and math.isfinite(end)):
        raise ValueError(f"{kind}: start and end must be finite, got {start!r}, {end!r}")
    if start < 0 or end < start:
        raise ValueError(f"{kind}: expected 0 <= start <= end, got start={start}, end={end}")


@dataclass(frozen=True, slots=True)
class AudioStreamInfo:
    index: int
    codec: str
    sample_rate: int
    channels: int

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "codec": self.codec,
                "sample_rate": self.sample_rate, "channels": self.channels}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AudioStreamInfo:
        return cls(int(d["index"]), str(d["codec"]), int(d["sample_rate"]), int(d["channels"]))


@dataclass(frozen=True, slots=True)
class VideoInfo:
    """What ``probe`` learns of a media file. ``has_video`` is False for audio-only input."""

    path: str
    size_bytes: int
    container: str
    duration: float
    has_video: bool
    width: int = 0
    height: int = 0
    fps: float = 0.0
    num_frames: int = 0
    rotation: int = 0
    video_codec: str = ""
    start_time: float = 0.0
    audio_streams: tuple[AudioStreamInfo, ...] = ()

    def __post_init__(self) -> None:
        if self.duration <= 0 or not math.isfinite(self.duration):
            raise ValueError(f"{self.path}: duration must be positive, got {self.duration}")

    @property
    def has_audio(self) -> bool:
        return bool(self.audio_streams)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path, "size_bytes": self.size_bytes, "container": self.container,
            "duration": self.duration, "has_video": self.has_video, "width": self.width,
            "height": self.height, "fps": self.fps, "num_frames": self.num_frames,
            "rotation": self.rotation, "video_codec": self.video_codec,
            "start_time": self.start_time,
            "audio_streams": [a.to_dict() for a in self.audio_streams],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> VideoInfo:
        fields = dict(d)
        fields["audio_streams"] = tuple(
            AudioStreamInfo.from_dict(a) for a in fields.get("audio_streams", ()))
        return cls(**fields)


@dataclass(frozen=True, slots=True)
class Transition:
    """How a scene begins: a hard cut (``type`` "hard", an empty span at the cut) or a gradual
    transition ("dissolve", "fade", ...) spanning ``[start, end)``, whose middle is the scene's
    start. Frames are 0-based display indices, ``end_frame`` exclusive like ``end``."""

    type: str
    start: float
    end: float
    start_frame: int
    end_frame: int

    def __post_init__(self) -> None:
        _check_span(f"transition {self.type!r}", self.start, self.end)
        if self.start_frame < 0 or self.end_frame < self.start_frame:
            raise ValueError(f"transition {self.type!r}: bad frame span "
                             f"[{self.start_frame}, {self.end_frame})")

    @property
    def gradual(self) -> bool:
        return self.type != "hard"

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "start": round(self.start, 4), "end": round(self.end, 4),
                "start_frame": self.start_frame, "end_frame": self.end_frame}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Transition:
        return cls(str(d["type"]), float(d["start"]), float(d["end"]), int(d["start_frame"]),
                   int(d["end_frame"]))


@dataclass(frozen=True, slots=True)
class Scene:
    """One shot. ``end_frame`` is exclusive, like ``end``. ``transition`` is the cut or gradual
    transition the scene begins with: None for the first scene, for scenes split from an
    overlong shot, and in records written before transitions were recorded."""

    index: int
    start: float
    end: float
    start_frame: int
    end_frame: int
    transition: Transition | None = None

    def __post_init__(self) -> None:
        _check_span(f"scene {self.index}", self.start, self.end)
        if self.index < 0 or self.start_frame < 0 or self.end_frame < self.start_frame:
            raise ValueError(
                f"scene {self.index}: bad frame span [{self.start_frame}, {self.end_frame})")

    @property
    def duration(self) -> float:
        return self.end - self.start

    def contains(self, t: float) -> bool:
        return self.start <= t < self.end

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"index": self.index, "start": self.start, "end": self.end,
                             "start_frame": self.start_frame, "end_frame": self.end_frame}
        if self.transition is not None:
            d["transition"] = self.transition.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Scene:
        transition = d.get("transition")
        return cls(int(d["index"]), float(d["start"]), float(d["end"]),
                   int(d["start_frame"]), int(d["end_frame"]),
                   Transition.from_dict(transition) if transition else None)


@dataclass(frozen=True, slots=True)
class Word:
    start: float
    end: float
    text: str
    probability: float = 1.0

    def __post_init__(self) -> None:
        _check_span(f"word {self.text!r}", self.start, self.end)

    @property
    def midpoint(self) -> float:
        return (self.start + self.end) / 2

    def to_dict(self) -> dict[str, Any]:
        return {"start": round(self.start, 3), "end": round(self.end, 3), "text": self.text,
                "probability": round(self.probability, 4)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Word:
        return cls(float(d["start"]), float(d["end"]), str(d["text"]),
                   float(d.get("probability", 1.0)))


@dataclass(frozen=True, slots=True)
class Transcript:
    text: str = ""
    words: tuple[Word, ...] = ()

    @classmethod
    def from_words(cls, words: Sequence[Word]) -> Transcript:
        text = "".join(w.text for w in words).strip()
        # Whisper words carry their own leading space; words from other sources may not.
        if words and not any(w.text.startswith(" ") for w in words[1:]):
            text = " ".join(w.text.strip() for w in words)
        return cls(text=text, words=tuple(words))

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "words": [w.to_dict() for w in self.words]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> Transcript:
        if not d:
            return cls()
        return cls(str(d.get("text", "")), tuple(Word.from_dict(w) for w in d.get("words", ())))


@dataclass(frozen=True, slots=True)
class SoundTag:
    label: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "score": round(self.score, 4)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SoundTag:
        return cls(str(d["label"]), float(d["score"]))


@dataclass(frozen=True, slots=True)
class ObjectSummary:
    """Per-scene summary of one COCO class: most seen at once, distinct tracks, mean confidence."""

    label: str
    max_count: int
    tracks: int
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "max_count": self.max_count, "tracks": self.tracks,
                "confidence": round(self.confidence, 4)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ObjectSummary:
        return cls(str(d["label"]), int(d["max_count"]), int(d["tracks"]),
                   float(d["confidence"]))


@dataclass(frozen=True, slots=True)
class FrameRef:
    """A sampled frame saved as JPEG; ``path`` is relative to the video's output folder."""

    time: float
    path: str

    def to_dict(self) -> dict[str, Any]:
        return {"time": round(self.time, 3), "path": self.path}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FrameRef:
        return cls(float(d["time"]), str(d["path"]))


@dataclass(frozen=True, slots=True)
class Caption:
    text: str
    new_tokens: int
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"text": self.text, "new_tokens": self.new_tokens}
        if self.error:
            d["error"] = self.error
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Caption:
        return cls(str(d.get("text", "")), int(d.get("new_tokens", 0)), d.get("error"))


@dataclass(frozen=True, slots=True)
class SceneRecord:
    """One line of ``scenes.jsonl``: a scene and everything computed about it."""

    scene: Scene
    transcript: Transcript = Transcript()
    sounds: tuple[SoundTag, ...] = ()
    objects: tuple[ObjectSummary, ...] = ()
    frames: tuple[FrameRef, ...] = ()
    captions: Mapping[str, Caption] = field(default_factory=dict)
    summary: str = ""

    @property
    def index(self) -> int:
        return self.scene.index

    def to_dict(self) -> dict[str, Any]:
        d = {"schema": SCHEMA_VERSION, **self.scene.to_dict(),
             "transcript": self.transcript.to_dict(),
             "sounds": [s.to_dict() for s in self.sounds],
             "objects": [o.to_dict() for o in self.objects],
             "frames": [f.to_dict() for f in self.frames],
             "captions": {k: c.to_dict() for k, c in self.captions.items()}}
        if self.summary:
            d["summary"] = {"text": self.summary, "source": "stage1-facts"}
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SceneRecord:
        version = int(d.get("schema", 0))
        if version > SCHEMA_VERSION:
            raise ValueError(f"scene record schema {version} is newer than this scenescribe "
                             f"({SCHEMA_VERSION}); upgrade scenescribe")
        summary = d.get("summary") or ""
        if isinstance(summary, Mapping):
            summary = summary.get("text", "")
        return cls(
            scene=Scene.from_dict(d),
            transcript=Transcript.from_dict(d.get("transcript")),
            sounds=tuple(SoundTag.from_dict(s) for s in d.get("sounds") or ()),
            objects=tuple(ObjectSummary.from_dict(o) for o in d.get("objects") or ()),
            frames=tuple(FrameRef.from_dict(f) for f in d.get("frames") or ()),
            captions={k: Caption.from_dict(c) for k, c in (d.get("captions") or {}).items()},
            summary=str(summary),
        )
