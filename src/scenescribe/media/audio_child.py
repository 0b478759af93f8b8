"""Audio decoded in worker processes: the speech stage's chunks, the sound tagger's blocks.

Decoding audio with PyAV is a Python loop per audio frame (about 47 a second of AAC), and each
frame releases and retakes the GIL several times. In Stage 1 the pooled reader ran as a thread
beside the frames, sound-tagging and tracking threads, and each retake waited its turn: on the
H200, W1's 20 minutes of audio took 34 s to read there. On a 2-CPU machine the same reading
took 5.0 s alone and 45 s beside two pure-Python and two frame-decoding threads; in children,
7-19 s, about what the CPUs left it (``benchmarks/bench_audio_read.py``). Here
``speech_chunks`` runs in child processes (``workers.worker_process``) with GILs of their
own; the parent's thread only receives whole chunks, two blocking reads each. The sound
tagger's reading (``iter_audio_blocks``, ``read="blocks"``) was the same loop in its stage's
thread: py-spy on the H200 found the tagger's threads reading audio for 11.1 of their 11.9 s of
samples (the model 0.6 s), beside the tracker (``results/h200-2026-12-04-o/spy_sounds.txt``).

Chunks come back over a Unix socket (``MSG_WAITALL``: one read however long the chunk), each as
a header (kind, offset, length) and its float32 samples, byte for byte what the in-process
reader yields. The socket's buffer is all that waits between the two, so a child blocks when
the parent stops taking and memory stays flat (``speech_chunks`` holds two 10-minute blocks at
most). The videos are dealt to ``readers`` lanes, one child each reading its videos in turn:
a process starts once per lane (its imports take 0.3-1 s), the next lane's video is decoded
while this one's chunks are taken, and chunks still come back in video order. Warnings the
child logs (damaged audio) are logged again here, and the damaged spans it found join this
process's ``damage_report``; an error ends that video only, with one line
naming the file, and a child that dies fails its video and is replaced for the lane's next.
``close`` kills every child, so a stopped stream leaves none behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import socket
import struct
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from scenescribe.errors import InputError, StageError
from scenescribe.knobs import env_count
from scenescribe.media.damage import DamagedSpan, damage_report, record_damage
from scenescribe.workers import Worker, worker_process

MODULE = "scenescribe.media.audio_child"
READERS = 2  # children at once: one reading, one starting or read ahead
HEADER = struct.Struct("<BdQ")  # kind, offset seconds, samples (or payload bytes)
CHUNK, SILENT, LOG, END, ERROR = range(5)

Chunk = tuple[float, np.ndarray, bool]  # as ``chunking.speech_chunks`` yields


def audio_readers() -> int:
    """Child processes reading audio at once; 0 reads in this process (the old way).
    ``SCENESCRIBE_AUDIO_READERS`` overrides the default of 2. A child's stdout is a Unix
    socket, so elsewhere (Windows) the audio is read here."""
    if os.name != "posix":
        return 0
    chosen = env_count("SCENESCRIBE_AUDIO_READERS")
    return READERS if chosen is None else chosen


@dataclass(eq=False)
class _Child:
    worker: Worker
    sock: socket.socket
    stack: contextlib.ExitStack  # the socket and the worker: closing it waits for the child
    in_step: bool = True  # at a file's boundary in its stream (not left midway through one)

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.worker.process.kill()


@dataclass(eq=False)
class _Lane:
    """Every ``readers``-th path, read one after another by one child process."""

    paths: deque[str]  # not yet taken, in order
    child: _Child | None = None
    busy: bool = False  # a thread is reading its stream (that thread closes a killed child)


READS = ("chunks", "blocks")  # what a child may run: ``speech_chunks``, ``iter_audio_blocks``


class ChildReader:
    """``chunks(path)`` is ``speech_chunks(path, **params)`` read in a child process, or with
    ``read="blocks"`` ``iter_audio_blocks(path, **params)`` (each block not silent).

    ``paths`` are dealt to ``readers`` lanes (path ``i`` to lane ``i % readers``), each one
    child reading its paths in turn, so a process starts once per lane, not per video (its
    imports took 0.3-1.5 s), and the next lanes' files are decoded while this one's chunks are
    taken. A path asked for out of that order gets a child of its own. ``close`` may come from
    another thread than the reading one: it kills every child."""

    def __init__(self, paths: Sequence[str | os.PathLike[str]], readers: int = READERS, *,
                 read: str = "chunks", **params: float) -> None:
        if read not in READS:
            raise ValueError(f"read must be one of {READS}, not {read!r}")
        self.read = read
        self.params = params
        names = [str(p) for p in paths]
        count = max(1, min(readers, len(names)))
        self._lanes = [_Lane(deque(names[k::count])) for k in range(count)]
        self._taken = 0  # paths of the plan taken so far
        self._extra: set[_Child] = set()  # children for paths off the plan
        self._lock = threading.Lock()
        self._closed = False

    def __enter__(self) -> ChildReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def chunks(self, path: str | os.PathLike[str]) -> Iterator[Chunk]:
        """``(offset, samples, silent)`` of ``path``, in order. A failure of this video raises
        ``InputError`` (the file's fault) or ``StageError``, both naming the file."""
        lane, child = self._take(str(path))
        try:
            yield from _receive(child, str(path))
        except StageError:
            if self._closed:  # killed by ``close``, not failed
                raise StageError(f"{path}: audio reading stopped") from None
            raise
        finally:
            self._release(lane, child)

    def close(self) -> None:
        """Kill every child and wait for them; later ``chunks`` calls fail."""
        with self._lock:
            self._closed = True
            busy = [(lane.child, lane.busy) for lane in self._lanes if lane.child is not None]
            busy += [(child, True) for child in self._extra]  # their generators close them
        for child, _ in busy:  # all killed first, so a reading thread's wait ends at once
            child.kill()
        for child, reading in busy:
            if reading:  # the reading thread closes the socket it may be blocked on
                child.worker.process.wait()
            else:
                child.stack.close()

    def _take(self, path: str) -> tuple[_Lane | None, _Child]:
        with self._lock:
            if self._closed:
                raise StageError(f"{path}: audio reading stopped")
            lane = self._lanes[self._taken % len(self._lanes)]
            if lane.busy or not lane.paths or lane.paths[0] != path:
                child = self._start([path])
                self._extra.add(child)
                return None, child
            if lane.child is None:  # first use, or its child failed: one for the rest
                lane.child = self._start(list(lane.paths))
            lane.paths.popleft()
            lane.busy = True
            self._taken += 1
            for other in self._lanes:  # the other lanes read ahead from the start
                if other.child is None and other.paths and not other.busy:
                    other.child = self._start(list(other.paths))
            return lane, lane.child

    def _release(self, lane: _Lane | None, child: _Child) -> None:
        with self._lock:
            if lane is not None:
                lane.busy = False
                if child.in_step and not self._closed and lane.paths:
                    return  # its child goes on to the lane's next path
                lane.child = None
            else:
                self._extra.discard(child)
        if not child.in_step:  # left midway or broken: its stream is out of step
            child.kill()
        child.stack.close()  # waits for it (done with its paths, or killed)

    def _start(self, paths: list[str]) -> _Child:
        """A child reading ``paths`` in turn (under the lock)."""
        ours, theirs = socket.socketpair()
        stack = contextlib.ExitStack()
        with theirs:  # the child's stdout; only ours stays open here, so EOF means it ended
            stack.enter_context(ours)
            worker = stack.enter_context(worker_process(
                MODULE, {"paths": paths, "params": self.params, "read": self.read},
                stdout=theirs.fileno()))
        return _Child(worker, ours, stack)


def _receive(child: _Child, path: str) -> Iterator[Chunk]:
    """``path``'s chunks from ``child``'s stream, its logged warnings logged here, its error
    raised. ``child.in_step`` is False from the first message until the file's last."""
    child.in_step = False
    header = bytearray(HEADER.size)
    while _fill(child.sock, memoryview(header)):
        kind, offset, count = HEADER.unpack(header)
        if kind in (CHUNK, SILENT):
            samples = np.empty(count, np.float32)
            if not _fill(child.sock, memoryview(samples).cast("B")):
                break
            yield offset, samples, kind == SILENT
            continue
        payload = bytearray(count)
        if not _fill(child.sock, memoryview(payload)):
            break
        message = json.loads(payload)
        if kind == LOG:
            logging.getLogger(message["logger"]).log(message["level"], "%s", message["text"])
            continue
        child.in_step = True  # END or ERROR: the file's last message
        _record_damage(path, message.get("damage"))
        if kind == ERROR and message["type"] == "InputError":
            raise InputError(message["path"], message["reason"])
        if kind == ERROR:
            raise StageError(f"{path}: audio cannot be read: {message['type']}: "
                             f"{message['text']}")
        return
    with contextlib.suppress(Exception):
        child.worker.process.wait(timeout=5)  # it closed the stream: let its stderr be whole
    raise StageError(f"{path}: the audio reader process failed: {child.worker.failure()}")


def _record_damage(path: str, spans: Any) -> None:
    """The damaged spans the child found in ``path``, into this process's ``damage_report``;
    a malformed list is dropped (its warnings were logged already)."""
    try:
        found = [DamagedSpan(str(d["stream"]), float(d["start"]), float(d["end"]),
                             str(d["reason"])) for d in spans or ()]
    except (KeyError, TypeError, ValueError):
        return
    if found:
        record_damage(path, found)


def _fill(sock: socket.socket, view: memoryview) -> bool:
    """Fill ``view`` from ``sock``; False at an early end of the stream. ``MSG_WAITALL`` makes
    it one blocking call, so the GIL is retaken once rather than once per socket buffer."""
    got = 0
    while got < len(view):
        try:
            n = sock.recv_into(view[got:], len(view) - got, socket.MSG_WAITALL)
        except OSError:
            return False
        if n == 0:
            return False
        got += n
    return True


# The child


class _Forward(logging.Handler):
    """Sends the child's warnings to the parent, which logs them as its own."""

    def __init__(self, send: Any) -> None:
        super().__init__(logging.WARNING)
        self.send = send

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self.send(LOG, 0.0, {"logger": record.name, "level": record.levelno,
                                 "text": record.getMessage()})


def _child_main() -> int:
    """Read a job (JSON) on stdin, send the chunks of its files in turn on stdout (a socket),
    each file's ending with END, or ERROR when it failed (the next file follows all the same)."""
    job = json.loads(sys.stdin.read())
    read = _reader(job.get("read", "chunks"))

    def damage(path: str) -> list[dict[str, Any]]:
        return [dataclasses.asdict(s) for s in damage_report(path)]

    sock = socket.socket(fileno=os.dup(1))
    os.dup2(2, 1)  # a stray print must not land in the stream

    def send(kind: int, offset: float, payload: Any) -> None:
        data = json.dumps(payload).encode()
        sock.sendall(HEADER.pack(kind, offset, len(data)) + data)

    logging.getLogger().addHandler(_Forward(send))
    logging.getLogger().setLevel(logging.WARNING)
    for path in job["paths"]:
        try:
            for offset, samples, silent in read(path, **job["params"]):
                samples = np.ascontiguousarray(samples, np.float32)
                sock.sendall(HEADER.pack(SILENT if silent else CHUNK, offset, len(samples)))
                sock.sendall(memoryview(samples).cast("B"))
        except (BrokenPipeError, ConnectionResetError):
            return 1  # the parent stopped reading
        except Exception as exc:  # this file's failure: the parent raises it for this video
            text = str(exc).splitlines()[0] if str(exc) else ""
            send(ERROR, 0.0, {"damage": damage(path),
                              **({"type": "InputError", "path": exc.path, "reason": exc.reason}
                                 if isinstance(exc, InputError)
                                 else {"type": type(exc).__name__, "text": text})})
            continue
        send(END, 0.0, {"damage": damage(path)})
    return 0


def _reader(name: str) -> Callable[..., Iterator[Chunk]]:
    """The child's reading by name (one of ``READS``; anything else is refused)."""
    if name == "chunks":
        from scenescribe.speech.chunking import speech_chunks

        return speech_chunks
    if name == "blocks":
        from scenescribe.media.audio import iter_audio_blocks

        def blocks(path: str, **params: Any) -> Iterator[Chunk]:
            for offset, samples in iter_audio_blocks(path, **params):
                yield offset, samples, False

        return blocks
    raise ValueError(f"unknown audio reading {name!r}")


if __name__ == "__main__":
    try:
        sys.exit(_child_main())
    except (BrokenPipeError, ConnectionResetError):
        sys.exit(1)
