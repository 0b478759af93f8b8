"""Audio Spectrogram Transformer (AST) fine-tuned on AudioSet, through transformers.

The model reads ``max_length`` log-mel frames (1024 frames of 10 ms: 10.25 s of audio); a span
shorter than that is one window of its own length, padded as AST's feature extractor pads it,
and a longer one is cut into windows about 50 % overlapped. Scores are sigmoids of the logits
(AudioSet is multi-label); labels come from the config's ``id2label``.

Features: ``ASTFeatureExtractor`` computes its Kaldi filterbank per waveform on the CPU: 74 ms
per 10 s window in its numpy loop (no torchaudio, 2-core dev machine), 6.7 ms through
torchaudio (H100 host), against 0.96 ms per window for the whole bf16 model on an H100. So
``Fbank`` computes the same features batched in torch on the model's device (0.23 ms per window
there) from the extractor's parameters; they match the extractor's to 1.2e-4 after
normalisation (tests check the numpy path, a GPU run checked the torchaudio one).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from scenescribe.backend import Backend, load_pretrained, ready_device
from scenescribe.gpu_share import launching
from scenescribe.sounds.windows import WindowedTagger, WindowSpec

log = logging.getLogger("scenescribe.sounds")

FRAME_SECONDS = 0.025  # the Kaldi fbank window and shift AST's features use
SHIFT_SECONDS = 0.010
FFT_SIZE = 512
PREEMPHASIS = 0.97
MEL_FLOOR = 1.192092955078125e-07  # float32 epsilon, Kaldi's log floor


def load_extractor(weights: Any) -> Any:
    """``ASTFeatureExtractor.from_pretrained``, quiet about its all-zero lowest mel filters.

    With 128 Kaldi mel bins over a 512-point FFT at 16 kHz the lowest filters are narrower than
    one FFT bin; AST was trained on exactly these features, so the warning is no news.
    """
    from transformers import ASTFeatureExtractor

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="At least one mel filter has all zero values")
        return ASTFeatureExtractor.from_pretrained(weights)


class Fbank:
    """AST's normalised log-mel features for a batch of waveforms, computed in torch."""

    def __init__(self, extractor: Any, device: str) -> None:
        import torch
        from transformers.audio_utils import mel_filter_bank, window_function

        rate = int(extractor.sampling_rate)
        self.frame, self.shift = round(rate * FRAME_SECONDS), round(rate * SHIFT_SECONDS)
        self.max_length = int(extractor.max_length)
        self.mean, self.std = float(extractor.mean), float(extractor.std)
        self.normalize = bool(extractor.do_normalize)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="At least one mel filter has all zero")
            mel = mel_filter_bank(num_frequency_bins=FFT_SIZE // 2 + 1,
                                  num_mel_filters=int(extractor.num_mel_bins), min_frequency=20,
                                  max_frequency=rate // 2, sampling_rate=rate, norm=None,
                                  mel_scale="kaldi", triangularize_in_mel_space=True)
        self.mel = torch.as_tensor(mel, dtype=torch.float32, device=device)
        window = window_function(self.frame, "hann", periodic=False)
        self.window = torch.as_tensor(window, dtype=torch.float32, device=device)
        self.device = device

    def __call__(self, waveforms: Sequence[np.ndarray]) -> Any:
        """``[batch, max_length, mel bins]`` float32 on the device."""
        import torch

        longest = max(len(w) for w in waveforms)
        batch = np.zeros((len(waveforms), max(longest, self.frame)), np.float32)
        for row, w in zip(batch, waveforms, strict=True):
            row[:len(w)] = w
        wav = torch.from_numpy(batch).to(self.device, non_blocking=True)
        frames = wav.unfold(-1, self.frame, self.shift)[:, :self.max_length]
        frames = frames - frames.mean(-1, keepdim=True)  # Kaldi's remove_dc_offset
        frames = torch.cat([frames[..., :1] * (1 - PREEMPHASIS),
                            frames[..., 1:] - PREEMPHASIS * frames[..., :-1]], dim=-1)
        power = torch.fft.rfft(frames * self.window, n=FFT_SIZE).abs().square()
        feats = torch.clamp(power @ self.mel, min=MEL_FLOOR).log()
        # Frames past a waveform's own end are zeros before normalising, as the extractor pads.
        valid = torch.tensor([1 + (len(w) - self.frame) // self.shift for w in waveforms],
                             device=self.device)
        steps = torch.arange(feats.shape[1], device=self.device)
        feats = feats * (steps[None, :] < valid[:, None])[..., None]
        feats = torch.nn.functional.pad(feats, (0, 0, 0, self.max_length - feats.shape[1]))
        return (feats - self.mean) / (self.std * 2) if self.normalize else feats


class _Ast:
    """The features, model, dtype and window geometry of one loaded checkpoint."""

    def __init__(self, backend: Backend) -> None:
        import torch
        from transformers import ASTForAudioClassification

        device, weights = backend.device, backend.weights()
        self.dtype = torch.float32
        if device.startswith("cuda"):
            self.dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        extractor = load_extractor(weights)
        ready_device(device)
        self.features = Fbank(extractor, device)
        self.model = load_pretrained(backend, ASTForAudioClassification, weights, self.dtype)
        config = self.model.config
        self.labels = [config.id2label[i] for i in range(config.num_labels)]
        fb = self.features
        window = (fb.max_length - 1) * fb.shift + fb.frame
        self.spec = WindowSpec(int(extractor.sampling_rate), window, window // 2, fixed=False,
                               min_span=fb.frame)

    def score(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        import torch

        with launching(), torch.inference_mode():
            inputs = self.features(windows).to(self.dtype)
            logits = self.model(input_values=inputs).logits
            return torch.sigmoid(logits.float()).cpu().numpy()


class ASTTagger(WindowedTagger):
    """AST on CUDA in bf16 (fp16 where bf16 is unsupported) or on the CPU in fp32."""

    # Imported under the load lock; the rest of the load overlaps the other components' (only
    # ``from_pretrained`` itself holds the lock: see backend.py).
    load_imports = ("torch", "transformers.audio_utils", "transformers:ASTFeatureExtractor",
                    "transformers:ASTForAudioClassification")
    side_by_side = True
    # Videos side by side: ``score`` keeps no state between calls (features and the forward
    # in inference mode), and each video reads its own audio.
    concurrent_videos = True

    def _load(self) -> Any:
        model = _Ast(self)
        # Measured on an H100 (bf16, full-size AST): 4.8 ms per window at batch 1, 1.15 at 8,
        # 0.96 at 16 and at 32 (0.54 GiB at 16). Two on the CPU keeps memory small.
        self.batch_size = 16 if self.device.startswith("cuda") else 2
        log.info("ast: %d labels, window %.2f s, dtype %s", len(model.labels),
                 model.spec.window / model.spec.sample_rate, model.dtype)
        return model

    @property
    def spec(self) -> WindowSpec:
        return self.model.spec

    @property
    def labels(self) -> Sequence[str]:
        return self.model.labels

    def score_windows(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        return self.model.score(windows)
