"""Tolerant decoding: a damaged packet costs its own frames, not the whole file.

A damaged stretch of a file (overwritten bytes, a cut-off tail) makes FFmpeg reject packets or
stop reading early. The decoders here skip what cannot be decoded, keep everything that can, and
note the damaged spans; at the end of a pass ``DamageLog.report`` logs one warning line naming the
file and the spans on the ``scenescribe.media`` logger (once per file, stream and spans in a
process, so several passes over one file do not repeat it), and ``damage_report(path)`` returns
the spans seen so far for anyone who wants to record them (say in ``run.json``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av

log = logging.getLogger("scenescribe.media")

# Data that ends this much before the stream's declared end counts as a cut-off tail. Generous,
# because containers round durations and audio priming shifts the last timestamps a little.
TRUNCATION_SLACK_S = 0.5

_lock = threading.Lock()
_seen: dict[str, list[DamagedSpan]] = {}
_warned: set[tuple[str, str, tuple[DamagedSpan, ...]]] = set()


@dataclass(frozen=True, slots=True)
class DamagedSpan:
    """Seconds of one stream that could not be decoded, and why."""

    stream: str  # "video" or "audio"
    start: float
    end: float
    reason: str

    def describe(self) -> str:
        return f"{self.start:.2f}-{self.end:.2f} s ({self.reason})"


def damage_report(path: str | Path) -> list[DamagedSpan]:
    """Every damaged span found in ``path`` by the passes run so far in this process."""
    with _lock:
        return list(_seen.get(str(path), []))


def record_damage(path: str | Path, spans: list[DamagedSpan]) -> None:
    """Spans another process found in ``path`` (the speech stage's audio readers), kept as if a
    pass here had found them: in ``damage_report``, and not warned of again (the other process's
    warning was already logged here)."""
    with _lock:
        known = _seen.setdefault(str(path), [])
        known.extend(s for s in spans if s not in known)
        for kind in {s.stream for s in spans}:
            _warned.add((str(path), kind, tuple(s for s in spans if s.stream == kind)))


class DamageLog:
    """Collects the damaged spans of one pass over one stream of one file."""

    def __init__(self, path: str | Path, stream: Any, origin: float = 0.0) -> None:
        self.path = str(path)
        self.kind = stream.type
        self.time_base = stream.time_base
        self.origin = origin
        self.expected_end = _declared_end(stream, origin)
        self.spans: list[DamagedSpan] = []
        self._run: list[Any] | None = None  # [start, end, packets, first error] of a bad run
        self.last_time: float | None = None  # end of the last good data
        self.bad_packets = 0

    def good(self, time: float | None, duration: float = 0.0) -> None:
        """A frame decoded at ``time``: closes a run of bad packets before it."""
        if self._run is not None:
            self._close(time)
        if time is not None:
            self.last_time = max(self.last_time or 0.0, time + duration)

    def bad_packet(self, packet: Any, exc: BaseException) -> None:
        """``packet`` was rejected by the decoder; consecutive rejects merge into one span."""
        self.bad_packets += 1
        t = self._packet_time(packet)
        if t is None:
            t = self.last_time or 0.0
        dur = float(packet.duration * self.time_base) if packet.duration else 0.0
        if self._run is None:
            self._run = [t, t + dur, 1, _reason(exc)]
        else:
            self._run[0] = min(self._run[0], t)
            self._run[1] = max(self._run[1], t + dur)
            self._run[2] += 1

    def unreadable(self, exc: BaseException) -> None:
        """The demuxer gave up: nothing after the last good data can be read."""
        start = self.last_time or 0.0
        self._add(start, max(start, self.expected_end or start), f"unreadable: {_reason(exc)}")
        self.expected_end = None  # already covered: no separate cut-off span

    def finish(self, reached_end: bool) -> None:
        """Close the pass; a pass that read to the end checks the data reached the declared end."""
        if self._run is not None:
            self._close(None)
        end, last = self.expected_end, self.last_time
        if reached_end and end is not None and last is not None and end - last > TRUNCATION_SLACK_S:
            if self.spans and self.spans[-1].end >= last - TRUNCATION_SLACK_S:
                last = self.spans.pop().start  # bad packets right before the end: one span
            self._add(last, end, "no data: the file is cut off")

    def report(self, kept: str) -> None:
        """Log one warning line for this pass's damage (once per file and spans), if any."""
        if not self.spans:
            return
        spans = tuple(self.spans)
        key = (self.path, self.kind, spans)
        with _lock:
            known = _seen.setdefault(self.path, [])
            known.extend(s for s in spans if s not in known)
            if key in _warned:
                return
            _warned.add(key)
        where = ", ".join(s.describe() for s in spans)
        log.warning("%s: damaged %s at %s; kept %s", self.path, self.kind, where, kept)

    def _packet_time(self, packet: Any) -> float | None:
        ts = packet.pts if packet.pts is not None else packet.dts
        return None if ts is None else max(0.0, float(ts * self.time_base) - self.origin)

    def _close(self, next_good: float | None) -> None:
        assert self._run is not None
        start, end, count, reason = self._run
        # The frames lost lie between the last good one and the next: a damaged keyframe takes
        # its whole GOP along, whatever its packet's own time says.
        start = min(start, self.last_time if self.last_time is not None else 0.0)
        if next_good is not None and next_good > end:
            end = next_good
        noun = "packet" if count == 1 else "packets"
        self._add(start, end, f"{count} {noun} undecodable: {reason}")
        self._run = None

    def _add(self, start: float, end: float, reason: str) -> None:
        self.spans.append(DamagedSpan(self.kind, round(start, 3), round(end, 3), reason))


def tolerant_decode(container: Any, stream: Any, damage: DamageLog,
                    discardable: Callable[[Any], bool] | None = None) -> Iterator[Any]:
    """Decoded frames of ``stream``, skipping packets the decoder rejects.

    Reading stops quietly where the demuxer gives up (noted as damage). Decoding by packet, not
    through ``container.decode``, is what lets one bad packet cost only its own frames.
    ``discardable(packet)`` True lets the decoder drop that packet's frame when no other frame
    refers to it (FFmpeg's ``skip_frame = NONREF``): such a frame never comes out.
    """
    packets = container.demux(stream)
    codec = stream.codec_context
    discarding = False
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            return
        except av.error.FFmpegError as exc:
            damage.unreadable(exc)
            return
        if discardable is not None and discardable(packet) != discarding:
            discarding = not discarding
            codec.skip_frame = "NONREF" if discarding else "DEFAULT"
        try:
            frames = packet.decode()
        except av.error.FFmpegError as exc:
            damage.bad_packet(packet, exc)
            continue
        yield from frames


def _declared_end(stream: Any, origin: float) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        start = float(stream.start_time * stream.time_base) if stream.start_time else 0.0
        return start + float(stream.duration * stream.time_base) - origin
    container = stream.container
    if container is not None and container.duration:
        return container.duration / av.time_base
    return None


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return text.splitlines()[0]
