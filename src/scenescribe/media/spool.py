"""Frames one decode keeps on disk for a later stage, so a video is decoded once for both.

Shot detection decodes every frame of a video; the object detector wants the first frame at or
after each of its ``1 / fps`` ticks (``TICK`` in ``media.frames``) at its own size. Decoding the
video a second time for those cost about as much CPU as shot detection's decode (W1 on the H200,
``benchmarks/NOTES.md``). So the shot detector's decoders, given a ``FrameSpool``, also convert
the frames the ticks pick and append them to a file on disk, and the detector reads them back.

A spool is a folder the run owns (``.work/spool/<stage>-<key>/``). Each decoder owns a span of
time (``[start, end)``, a shot segment) and writes ``<part>.rgb`` (the frames' RGB bytes one
after another) and, last, ``<part>.json`` (each frame's time and the ticks it covers). The parent
writes ``spool.json`` once every part is whole: a spool without it is never read. Disk, not
memory, holds the frames, so memory stays flat however long the video; a spool larger than
``SCENESCRIBE_SPOOL_GB`` (default 8) per video, or than half the free disk, is not written and
the consumer decodes on its own. The picks are exactly ``decode_pass``'s (tests compare pixels).
"""

from __future__ import annotations

import bisect
import contextlib
import json
import logging
import math
import shutil
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scenescribe.knobs import env_count
from scenescribe.media.stream import DecodedFrame, to_rgb, upright_size
from scenescribe.store import atomic_write_json

log = logging.getLogger("scenescribe.media")

SEALED = "spool.json"
SPOOLS = "spool"  # the folder of spools in a video's ``.work``
SPOOL_GB = "SCENESCRIBE_SPOOL_GB"  # knob: the most a video's spool may take on disk (0: none)
DEFAULT_SPOOL_GB = 8
_EPS = 1e-6  # the tolerance ``media.frames`` gives a tick: a frame at ``t`` serves ticks <= t + eps


@dataclass(frozen=True, slots=True)
class TickSpec:
    """Which frames a spool keeps: ticks ``k / fps`` for ``k < count``, each the first frame at or
    after it, shrunk so its short side is ``short_side`` (None: full size)."""

    fps: float
    count: int
    short_side: int | None

    def time(self, tick: int) -> float:
        return tick / self.fps

    @classmethod
    def from_dict(cls, data: Any) -> TickSpec:
        if not isinstance(data, Mapping):
            raise ValueError("not a tick spec")
        fps, count, short = data.get("fps"), data.get("count"), data.get("short_side")
        if (not isinstance(fps, (int, float)) or not 0 < fps < 1000 or not isinstance(count, int)
                or count < 0 or not (short is None or (isinstance(short, int) and short > 0))):
            raise ValueError(f"bad tick spec {dict(data)!r}")
        return cls(float(fps), count, short)


def spool_budget() -> int:
    """Bytes a video's spool may take (``SCENESCRIBE_SPOOL_GB``; 0 turns spooling off)."""
    gb = env_count(SPOOL_GB)
    return (DEFAULT_SPOOL_GB if gb is None else gb) * 2**30


class TickTap:
    """Offered every frame one decoder decodes, in display order; keeps those its span owns
    that a tick picks. A frame at ``t`` covers the ticks after the previous decoded frame's time
    up to ``t`` (with ``media.frames``' tolerance): exactly those it would serve in one pass."""

    def __init__(self, folder: Path, spec: TickSpec, part: int, start: float, end: float) -> None:
        self.folder, self.spec, self.part, self.start, self.end = folder, spec, part, start, end
        self._next = 0  # the first tick no decoded frame has covered yet
        self._seen = False
        self._exact = True
        self._size: tuple[int, int] | None = None
        self._shape: tuple[int, ...] | None = None
        self._frames: list[tuple[int, int, float]] = []  # (first tick, last tick, time)
        self._out = open(folder / f"{part}.rgb", "wb")  # noqa: SIM115 - closed by ``close``

    def offer(self, frame: Any, t: float, rotation: int) -> None:
        """One decoded frame (a PyAV frame shown from ``t`` s on, turned by ``rotation``)."""
        first = self._next
        while self._next < self.spec.count and self.spec.time(self._next) <= t + _EPS:
            self._next += 1
        if not self.start <= t < self.end:
            self._seen = True
            return
        if not self._seen and self.start > 0:
            # No frame before the span was decoded, so which ticks the first one covers is
            # unknown (the previous span's last frame may serve some): the part is not exact.
            self._exact = False
        self._seen = True
        if self._next == first:
            return
        if self._size is None:
            self._size = upright_size(frame, rotation, None, self.spec.short_side)
        image = to_rgb(frame, self._size, rotation)
        if self._shape is None:
            self._shape = image.shape
        elif image.shape != self._shape:
            self._exact = False  # a resolution change mid-stream: not one array shape
            return
        self._out.write(np.ascontiguousarray(image).tobytes())
        self._frames.append((first, self._next - 1, t))

    def close(self) -> None:
        """Finish the part: its index is written last, so a part without one is never read."""
        self._out.close()
        atomic_write_json(self.folder / f"{self.part}.json", {
            "exact": self._exact, "shape": list(self._shape or ()),
            "frames": [list(f) for f in self._frames]})

    def abandon(self) -> None:
        self._out.close()


class FrameSpool:
    """One video's spool folder for ``spec``: written by decoders (``tap``), sealed by the parent
    once every part is whole (``seal``), read back by the consumer (``open`` then ``picks``).
    ``on_sealed`` (if set) is called once, by the thread that seals it: the consumer may start
    while the decoding stage is still busy with the rest of its work."""

    def __init__(self, folder: Path, spec: TickSpec) -> None:
        self.folder, self.spec = Path(folder), spec
        self._parts: list[tuple[Path, tuple[int, int, int], list[tuple[int, int, float]]]] = []
        self.on_sealed: Callable[[], None] | None = None
        self._sealing = threading.Lock()
        self._sealed_here = False

    @classmethod
    def create(cls, folder: Path, spec: TickSpec) -> FrameSpool:
        """An empty spool in ``folder`` (a spool an earlier run left there is replaced)."""
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        return cls(folder, spec)

    def job(self, part: int, start: float, end: float) -> dict[str, Any]:
        """What a decoder in another process needs for ``tap_from_job``."""
        return {"folder": str(self.folder), "spec": asdict(self.spec), "part": part,
                "start": start, "end": end if math.isfinite(end) else None}

    def tap(self, part: int = 0, start: float = 0.0, end: float = math.inf) -> TickTap:
        return TickTap(self.folder, self.spec, part, start, end)

    @property
    def sealed(self) -> bool:
        """Sealed here, or found sealed on disk (the consumer removes it once read)."""
        return self._sealed_here or (self.folder / SEALED).exists()

    def seal(self, parts: int) -> None:
        """Mark the spool readable: parts ``0 .. parts - 1`` are all written. Once only: a
        second call is a no-op (the consumer may already have read and removed the spool)."""
        with self._sealing:
            if self._sealed_here:
                return
            atomic_write_json(self.folder / SEALED, {"spec": asdict(self.spec), "parts": parts})
            self._sealed_here = True
        if self.on_sealed is not None:
            self.on_sealed()

    @classmethod
    def open(cls, folder: Path, spec: TickSpec) -> FrameSpool | None:
        """The sealed spool in ``folder`` if it holds exactly ``spec``'s frames, else None (none
        was written, a decoder could not keep its span exactly, or a file is damaged)."""
        if not (folder / SEALED).exists():
            return None
        spool = cls(folder, spec)
        try:
            spool._read_index()
        except (OSError, ValueError, TypeError, KeyError) as exc:
            log.warning("%s: unusable frame spool (%s); decoding the frames instead", folder, exc)
            return None
        return spool

    def _read_index(self) -> None:
        sealed = json.loads((self.folder / SEALED).read_text())
        if TickSpec.from_dict(sealed["spec"]) != self.spec:
            raise ValueError("written for other ticks")
        parts = sealed["parts"]
        if not isinstance(parts, int) or not 0 <= parts <= 10_000:
            raise ValueError(f"bad part count {parts!r}")
        last = -1.0
        for part in range(parts):
            index = json.loads((self.folder / f"{part}.json").read_text())
            if index["exact"] is not True:
                raise ValueError(f"part {part} is not exact")
            frames = [(int(a), int(b), float(t)) for a, b, t in index["frames"]]
            shape = tuple(int(x) for x in index["shape"]) if frames else (0, 0, 3)
            if len(shape) != 3 or shape[2] != 3 or (frames and min(shape) <= 0):
                raise ValueError(f"part {part}: bad shape {shape}")
            data = self.folder / f"{part}.rgb"
            if data.stat().st_size != len(frames) * math.prod(shape):
                raise ValueError(f"part {part}: {data.name} has the wrong size")
            for a, b, t in frames:
                if not (0 <= a <= b < self.spec.count and t > last):
                    raise ValueError(f"part {part}: frames out of order")
                last = t
            self._parts.append((data, (shape[0], shape[1], shape[2]), frames))

    def picks(self, wanted: Sequence[int]) -> Iterator[tuple[int, DecodedFrame]]:
        """``(tick, frame)`` for each kept frame covering a wanted tick, in time order; the tick
        is the first wanted one it covers, as ``decode_pass`` over those ticks picks it."""
        ticks = sorted(set(wanted))
        for data, shape, frames in self._parts:
            size = math.prod(shape)
            with open(data, "rb") as source:
                for position, (first, last, t) in enumerate(frames):
                    k = bisect.bisect_left(ticks, first)
                    if k == len(ticks) or ticks[k] > last:
                        continue
                    source.seek(position * size)
                    buffer = bytearray(size)
                    if source.readinto(buffer) != size:
                        raise OSError(f"{data}: cut short")
                    image = np.frombuffer(buffer, np.uint8).reshape(shape)
                    yield ticks[k], DecodedFrame(-1, t, image)

    def remove(self) -> None:
        discard(self.folder)


def tap_from_job(job: Mapping[str, Any] | None) -> TickTap | None:
    """The tap a decoder process opens from ``FrameSpool.job``'s dict (None: no spool)."""
    if not job:
        return None
    end = job.get("end")
    return TickTap(Path(job["folder"]), TickSpec.from_dict(job["spec"]), int(job["part"]),
                   float(job["start"]), math.inf if end is None else float(end))


def fits(folder: Path, spec: TickSpec, width: int, height: int) -> bool:
    """Whether ``spec``'s frames of a ``width`` x ``height`` video fit the spool budget and
    half the disk's free space where ``folder`` will be."""
    if not width or not height:
        return False
    short = spec.short_side or min(width, height)
    scale = min(1.0, short / min(width, height))
    return fits_bytes(folder, spec.count * 3 * math.ceil(width * scale) * math.ceil(height * scale))


def fits_bytes(folder: Path, need: int) -> bool:
    """Whether a spool of ``need`` bytes fits the budget (``SCENESCRIBE_SPOOL_GB`` per video; 0:
    no spools) and half the disk's free space where ``folder`` will be."""
    base = folder
    while not base.exists() and base != base.parent:
        base = base.parent
    try:
        free = shutil.disk_usage(base).free
    except OSError:
        return False
    return 0 < need <= min(spool_budget(), free // 2)


def spool_folder(work: Path, stage: str, key: str) -> Path:
    """Where ``stage``'s spool computed under ``key`` lives in a video's ``.work`` folder."""
    return work / SPOOLS / f"{stage}-{key}"


def discard(folder: Path) -> None:
    """Remove a spool folder. The folder of spools stays: another stage may be creating its
    own spool in it at this moment (the speech stage's audio spool and the shot detector's
    frame spool start together); ``tidy`` removes it once the run is over."""
    shutil.rmtree(folder, ignore_errors=True)


def tidy(work: Path) -> None:
    """Remove the folder of spools in ``work`` if it is empty (the run is over)."""
    with contextlib.suppress(OSError):  # not empty, or gone
        (work / SPOOLS).rmdir()


def remove_others(work: Path, stage: str, keep: Path) -> None:
    """Remove ``stage``'s spools under other keys (an earlier configuration's, a killed run's)."""
    for path in (work / SPOOLS).glob(f"{stage}-*"):
        if path != keep and path.is_dir():
            discard(path)
