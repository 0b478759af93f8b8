"""A video's decoded audio kept on disk by its first reader for a second one.

The speech stage decodes every video's whole audio to 16 kHz mono float32 (``audio_child``,
seconds of CPU per hour of audio); the sound tagger wants the same samples again, and decoding
them a second time took most of its compute (W1 on the H200: 7.7 of its 8 s, run one video at a
time after Whisper's load, at the end of Stage 1). So the speech reader, given an
``AudioSpool``, writes the samples it passes to the model (silent chunks too) into a file, and
the tagger cuts its windows from that file (``windows``), exactly the samples its own decode
(``sounds.windows.read_windows``) would give: both read ``iter_audio_blocks``' one stream.

A spool is a folder the run owns (``.work/spool/audio-<probe key>/``): ``audio.f32`` (the
samples, little-endian float32, sample ``k`` at byte ``4 k``) and, written last and atomically,
``audio.json`` (its rate and length). A spool without ``audio.json`` is never read, and a sealed
one is never written again. Disk, not memory, holds the audio (about 230 MB an hour), within
``SCENESCRIBE_SPOOL_GB`` per video and half the free disk (``spool.fits_bytes``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np

from scenescribe.media.spool import SPOOLS, discard, fits_bytes, spool_folder, tidy
from scenescribe.store import atomic_write_json, read_json

log = logging.getLogger("scenescribe.media")

STAGE = "audio"  # the spool folders' prefix in ``.work/spool``
DATA = "audio.f32"
SEALED = "audio.json"
VERSION = 1
SAMPLE_BYTES = 4

Chunk = tuple[float, np.ndarray, bool]  # (offset seconds, samples, silent), as readers yield
Window = tuple[int, int]  # (first sample, length in samples)


def audio_spool_folder(work: Path, probe_key: str) -> Path:
    """Where the audio of the file probed under ``probe_key`` is spooled in ``work``."""
    return spool_folder(work, STAGE, probe_key)


def fits(folder: Path, duration: float, sample_rate: int) -> bool:
    """Whether ``duration`` seconds at ``sample_rate`` fit the spool budget and the disk."""
    if not duration or duration <= 0 or not math.isfinite(duration):
        return False
    return fits_bytes(folder, math.ceil(duration * sample_rate) * SAMPLE_BYTES)


def discard_audio_spools(work: Path) -> None:
    """Remove every audio spool in ``work``, and the folder of spools once empty (the run's
    end: nothing reads them any more)."""
    for path in (work / SPOOLS).glob(f"{STAGE}-*"):
        if path.is_dir():
            discard(path)
    tidy(work)


def teeing(read: Callable[[str], Iterable[Chunk]],
           spools: Mapping[str, AudioSpool]) -> Callable[[str], Iterator[Chunk]]:
    """``read`` (a path's chunks), a path's chunks also written into its spool in ``spools``,
    the first time that path is read."""
    left = dict(spools)

    def chunks(path: str) -> Iterator[Chunk]:
        spool = left.pop(path, None)
        return iter(read(path)) if spool is None else spool.tee(read(path))

    return chunks


class AudioSpool:
    """One video's audio on disk: filled once through ``tee``, then read through ``windows``."""

    def __init__(self, folder: Path, sample_rate: int, samples: int | None = None) -> None:
        self.folder = folder
        self.sample_rate = sample_rate
        self.samples = samples  # set once sealed

    @property
    def sealed(self) -> bool:
        return self.samples is not None

    @classmethod
    def create(cls, folder: Path, sample_rate: int) -> AudioSpool | None:
        """An empty spool in ``folder``; None where a sealed one is there already (the same
        file's audio, which a reader may be using: it is reused, never rewritten)."""
        if cls.open(folder, sample_rate) is not None:
            return None
        discard(folder)  # an unsealed one: a killed run's, which nobody reads
        folder.mkdir(parents=True, exist_ok=True)
        return cls(folder, sample_rate)

    @classmethod
    def open(cls, folder: Path, sample_rate: int) -> AudioSpool | None:
        """The sealed spool in ``folder`` at ``sample_rate``, or None (absent, unsealed, at
        another rate, or its data not the length it says)."""
        seal = folder / SEALED
        if not seal.is_file():
            return None
        try:
            meta = read_json(seal)
            if not isinstance(meta, dict):
                return None
            samples = int(meta["samples"])
            ok = (meta.get("version") == VERSION and int(meta["sample_rate"]) == sample_rate
                  and samples >= 0
                  and (folder / DATA).stat().st_size == samples * SAMPLE_BYTES)
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return cls(folder, sample_rate, samples) if ok else None

    def tee(self, chunks: Iterable[Chunk]) -> Iterator[Chunk]:
        """``chunks`` as they come, each written at its offset; sealed once they all came,
        removed if they stop early (an error, a closed stream). A failure to write (a full
        disk) only ends the spooling: the chunks still flow."""
        out: BinaryIO | None = (self.folder / DATA).open("wb")
        end = 0
        whole = False
        try:
            for chunk in chunks:
                if out is not None:
                    try:
                        end = max(end, self._write(out, chunk))
                    except OSError as exc:
                        log.debug("%s: audio spool abandoned (%s)", self.folder, exc)
                        out.close()
                        out = None
                yield chunk
            whole = out is not None
        finally:
            if out is not None:
                out.close()
            if whole:
                self._seal(end)
            else:
                discard(self.folder)

    def _write(self, out: BinaryIO, chunk: Chunk) -> int:
        offset, samples, _ = chunk
        first = int(round(offset * self.sample_rate))
        data = np.ascontiguousarray(samples, dtype="<f4")
        out.seek(first * SAMPLE_BYTES)  # a gap (none expected: chunks tile) reads as zeros
        out.write(data.data)
        return first + len(data)

    def _seal(self, samples: int) -> None:
        try:
            with (self.folder / DATA).open("ab") as out:  # zeros up to ``samples``: never short
                out.truncate(samples * SAMPLE_BYTES)
            atomic_write_json(self.folder / SEALED, {"version": VERSION, "samples": samples,
                                                     "sample_rate": self.sample_rate})
        except OSError as exc:
            log.debug("%s: audio spool not sealed (%s)", self.folder, exc)
            discard(self.folder)
            return
        self.samples = samples

    def abandon(self) -> None:
        """Remove the spool unless sealed (its video's reading never started, or stopped)."""
        if not self.sealed:
            discard(self.folder)

    def windows(self, windows: Sequence[Window]) -> Iterator[np.ndarray]:
        """Each window's samples as float32; past the end of the audio, silence (zeros)."""
        if self.samples is None:
            raise ValueError(f"{self.folder}: the audio spool is not sealed")
        data = (np.memmap(self.folder / DATA, dtype="<f4", mode="r", shape=(self.samples,))
                if self.samples else np.zeros(0, np.float32))
        for start, length in windows:
            out = np.zeros(length, np.float32)
            piece = data[max(0, start):max(0, start + length)]
            out[max(0, -start):max(0, -start) + len(piece)] = piece
            yield out
