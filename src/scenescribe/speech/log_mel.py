"""Whisper's log-mel features for a batch of chunks, computed where the model runs.

transformers' ``WhisperFeatureExtractor`` pads the chunks with numpy, copies them to the device
from pageable memory, computes the log-mel there, copies it back to the host (waiting for the
device) and returns numpy, which the caller copies to the device again. Inside Stage 1, with the
CPUs and the GPU shared, that round trip is part of an encode phase that took 1-10 s
(``benchmarks/results/h200-2026-12-03-m``). ``LogMel`` fills one pinned host buffer with the
padded chunks, copies it once and keeps the features on the device. The arithmetic is the
extractor's: a Hann-window STFT of ``n_fft`` every ``hop_length`` samples (its last frame
dropped), power, the extractor's mel filters, log10 floored at 1e-10 and at 8 below each chunk's
largest value, then ``(x + 4) / 4``. An extractor that dithers is used as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


class LogMel:
    """Log-mel features of ``[chunks, mels, frames]`` for one ``WhisperFeatureExtractor``."""

    def __init__(self, extractor: Any, device: str) -> None:
        self.extractor = extractor
        self.device = device
        self._host: Any = None  # pinned (CUDA only), reused while large enough
        self._copied: Any = None  # the event after the last copy out of ``_host``
        self._filters: Any = None
        self._window: Any = None

    def __call__(self, chunks: Sequence[np.ndarray], dtype: Any) -> Any:
        """``[len(chunks), mels, frames]`` features in ``dtype`` on the device."""
        import torch

        extractor = self.extractor
        if getattr(extractor, "dither", 0.0):  # random noise: keep the extractor's own
            from scenescribe.media import SAMPLE_RATE

            features = extractor(list(chunks), sampling_rate=SAMPLE_RATE, return_tensors="pt",
                                 device=self.device).input_features
            return features.to(self.device, dtype)
        wave = self._upload(chunks)
        if self._filters is None:
            self._filters = torch.from_numpy(np.asarray(extractor.mel_filters, np.float32)).T.to(
                wave.device)
            self._window = torch.hann_window(extractor.n_fft, device=wave.device)
        spectrum = torch.stft(wave, extractor.n_fft, extractor.hop_length, window=self._window,
                              return_complex=True)
        power = spectrum[..., :-1].abs() ** 2
        mel = (self._filters @ power).clamp(min=1e-10).log10()
        peak = mel.amax(dim=(1, 2), keepdim=True)
        mel = torch.maximum(mel, peak - 8.0)
        return ((mel + 4.0) / 4.0).to(dtype)

    def _upload(self, chunks: Sequence[np.ndarray]) -> Any:
        """The chunks zero-padded (or cut) to the extractor's 30 s, as one float32 tensor on the
        device, copied from one pinned buffer on CUDA."""
        import torch

        rows, samples = len(chunks), int(self.extractor.n_samples)
        cuda = self.device.startswith("cuda")
        if cuda:  # one pinned buffer, kept: pinning is slow and the batches are alike
            if self._copied is not None:
                self._copied.synchronize()  # the last batch's copy has left the buffer
            if self._host is None or self._host.shape[0] < rows:
                self._host = torch.empty((rows, samples), dtype=torch.float32, pin_memory=True)
            host = self._host[:rows]
        else:  # filled in place and returned: nothing to keep
            host = torch.empty((rows, samples), dtype=torch.float32)
        for row, chunk in zip(host, chunks, strict=True):
            data = torch.from_numpy(np.ascontiguousarray(chunk[:samples], dtype=np.float32))
            row[: len(data)].copy_(data)
            row[len(data):].zero_()
        if not cuda:
            return host if self.device == "cpu" else host.to(self.device)
        wave = host.to(self.device, non_blocking=True)
        self._copied = torch.cuda.Event()
        self._copied.record()
        return wave
