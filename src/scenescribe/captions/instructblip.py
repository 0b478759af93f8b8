"""InstructBLIP (Vicuna-7B): a single-image model, so a scene's frames become one panorama.

As the reference: the frames are stitched side by side, the caption instruction is the prompt
(no chat format), beam search with 5 beams and at least 10 new tokens. The reference passed
``min_length=10`` when InstructBLIP's ``generate`` returned only new tokens; transformers 5 returns
the prompt too, so the same intent is ``min_new_tokens=10``.

The checkpoint's current ``processor_config.json`` names ``InstructBlipVideoProcessor``, which
``AutoProcessor`` would load (5-D pixel values that ``generate`` rejects); the model card builds
``InstructBlipProcessor``, and so do we. Its tokenizer (LAVIS's Vicuna setup) uses ``</s>`` as
bos, eos and unk, ``[PAD]`` at 32000 and ``<image>`` at 32001; the language model's vocabulary is
padded to 32,064. Its ``generation_config.json`` names eos 1, while the model ends answers with
``</s>`` (2): both stop a caption.
"""

from __future__ import annotations

from typing import Any

from scenescribe.captions.base import CaptionRequest
from scenescribe.captions.hf_base import TransformersCaptioner, open_rgb


def panorama(images: list[Any]) -> Any:
    """Frames side by side at the height of the first, keeping each frame's aspect ratio."""
    from PIL import Image

    height = images[0].height
    scaled = [im if im.height == height else
              im.resize((max(1, round(im.width * height / im.height)), height), Image.BICUBIC)
              for im in images]
    canvas = Image.new("RGB", (sum(im.width for im in scaled), height))
    x = 0
    for im in scaled:
        canvas.paste(im, (x, 0))
        x += im.width
    return canvas


class InstructBlipCaptioner(TransformersCaptioner):
    """InstructBLIP with the sampled frames stitched into one image."""

    model_class_name = "InstructBlipForConditionalGeneration"
    num_beams = 5
    min_new_tokens_floor = 10
    end_tokens = ("</s>",)

    def load_processor(self, path: Any) -> Any:
        """``InstructBlipProcessor`` whatever class ``processor_config.json`` names."""
        from transformers import InstructBlipProcessor

        return InstructBlipProcessor.from_pretrained(path)

    def images(self, request: CaptionRequest) -> list[Any]:
        return [panorama([open_rgb(p) for p in request.frames])]

    def prompt(self, request: CaptionRequest, n_images: int) -> str:
        return self.instruction(request)

    def encode(self, images: list[list[Any]], prompts: list[str]) -> Any:
        flat = [scene[0] for scene in images]
        return self.processor(images=flat, text=prompts, padding=True, return_tensors="pt")

    def image_tokens(self, sizes: list[tuple[int, int]]) -> int:
        return int(self.processor.num_query_tokens)
