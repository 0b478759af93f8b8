"""Qwen2.5-VL 7B Instruct: native-resolution images, one ``<|image_pad|>`` run per frame.

Left padding is safe with its 3-D (M-RoPE) positions: ``get_rope_index`` numbers only the tokens
the attention mask keeps, and the per-sample offset it returns (``rope_deltas``) carries each
row's own position into the decoding steps.
"""

from __future__ import annotations

from scenescribe.captions.hf_base import TransformersCaptioner


class Qwen25VLCaptioner(TransformersCaptioner):
    """Qwen2.5-VL: each frame is one image at (bounded) native resolution."""

    model_class_name = "Qwen2_5_VLForConditionalGeneration"
    end_tokens = ("<|im_end|>",)
