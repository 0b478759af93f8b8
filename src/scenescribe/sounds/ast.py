"""Audio Spectrogram Transformer (AST) fine-tuned on AudioSet, through transformers.

The model reads ``max_length`` log-mel frames (1024 frames of 10 ms: 10.24 s); a span shorter
than that is one window of its own length, padded by the feature extractor as in AST's AudioSet
training, and a longer one is cut into windows with 50 % overlap. Scores are sigmoids of the
logits (AudioSet is multi-label); labels come from the config's ``id2label``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from scenescribe.sounds.windows import WindowedTagger, WindowSpec

log = logging.getLogger("scenescribe.sounds")

FRAME_SECONDS = 0.025  # the Kaldi fbank window and shift AST's features use
SHIFT_SECONDS = 0.010


class _Ast:
    """The feature extractor, model, dtype and window geometry of one loaded checkpoint."""

    def __init__(self, weights: Any, device: str) -> None:
        import torch
        from transformers import ASTFeatureExtractor, ASTForAudioClassification

        self.dtype = torch.float32
        if device.startswith("cuda"):
            self.dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.extractor = ASTFeatureExtractor.from_pretrained(weights)
        self.model = ASTForAudioClassification.from_pretrained(weights, dtype=self.dtype)
        self.model.to(device).eval()
        self.device = device
        config = self.model.config
        self.labels = [config.id2label[i] for i in range(config.num_labels)]
        rate = int(self.extractor.sampling_rate)
        frame, shift = round(rate * FRAME_SECONDS), round(rate * SHIFT_SECONDS)
        window = (int(self.extractor.max_length) - 1) * shift + frame
        self.spec = WindowSpec(rate, window, window // 2, fixed=False, min_span=frame)

    def score(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        import torch

        features = self.extractor(list(windows), sampling_rate=self.spec.sample_rate,
                                  return_tensors="pt")
        inputs = features["input_values"].to(self.device, self.dtype, non_blocking=True)
        with torch.inference_mode():
            logits = self.model(input_values=inputs).logits
        return torch.sigmoid(logits.float()).cpu().numpy()


class ASTTagger(WindowedTagger):
    """AST on CUDA in bf16 (fp16 where bf16 is unsupported) or on the CPU in fp32."""

    def _load(self) -> Any:
        model = _Ast(self.weights(), self.device)
        # A 10 s window is 1212 patches: 16 fill a GPU well; the CPU gains nothing from more.
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
