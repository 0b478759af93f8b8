"""SmolVLM2 (500M Video-Instruct): Idefics3-style image splitting, small enough for CPU.

Each frame is passed as an image; the processor splits it into tiles plus a global view and
writes the tile grid (``<row_i_col_j>``) into the prompt. Its processor needs ``num2words``.
"""

from __future__ import annotations

from scenescribe.captions.hf_base import TransformersCaptioner


class SmolVLMCaptioner(TransformersCaptioner):
    """SmolVLM2: frames as images, tiled by the processor."""

    model_class_name = "SmolVLMForConditionalGeneration"
    end_tokens = ("<end_of_utterance>",)

    def image_tokens(self, sizes: list[tuple[int, int]]) -> int:
        """Tiles (plus the global view) times tokens per tile, with their marker tokens."""
        image_processor = self.processor.image_processor
        per_tile = self.processor.image_seq_len + 2
        total = 0
        for height, width in sizes:
            tiles, _, _ = image_processor.get_number_of_image_patches(height, width)
            total += max(tiles, 1) * per_tile
        return total
