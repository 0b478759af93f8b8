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

# Published config of Salesforce/instructblip-vicuna-7b: EVA ViT-g/14 at 224 px (the defaults of
# InstructBlipVisionConfig), a BERT-base Q-Former with 32 queries, Vicuna-7B v1.1 with its
# vocabulary padded to 32,064 (tests/fixtures/published).
VICUNA_7B = {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008,
             "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
             "max_position_embeddings": 2048, "rms_norm_eps": 1e-6, "vocab_size": 32064,
             "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 32000}
PAD_ID, IMAGE_ID = 32000, 32001  # "[PAD]" and "<image>" in the published tokenizer
QFORMER_VOCAB = 30523  # bert-base-uncased plus BLIP-2's [DEC]


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

    @classmethod
    def published_config(cls, name: str) -> Any:
        from transformers import InstructBlipConfig

        return InstructBlipConfig(
            vision_config={}, qformer_config={"vocab_size": QFORMER_VOCAB},
            text_config=dict(VICUNA_7B), num_query_tokens=32, image_token_index=IMAGE_ID)

    @classmethod
    def offline_processor(cls, name: str, config: Any) -> Any:
        from transformers import BlipImageProcessor, InstructBlipProcessor
        from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

        from scenescribe.captions.offline import code_tokenizer

        text = config.text_config
        image_id = config.image_token_index
        # As published: "</s>" is bos, eos and unk (so prompts start with id 2).
        tokenizer = code_tokenizer(
            text.vocab_size, {"<unk>": 0, "<s>": 1, "</s>": 2, "[PAD]": image_id - 1,
                              "<image>": image_id},
            bos="</s>", eos="</s>", pad="[PAD]", unk="</s>", wrap=("</s>", None))
        qformer = code_tokenizer(
            config.qformer_config.vocab_size,
            {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4},
            pad="[PAD]", unk="[UNK]", wrap=("[CLS]", "[SEP]"))
        side = config.vision_config.image_size
        image_processor = BlipImageProcessor(
            size={"height": side, "width": side}, image_mean=OPENAI_CLIP_MEAN,
            image_std=OPENAI_CLIP_STD)
        return InstructBlipProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                     qformer_tokenizer=qformer,
                                     num_query_tokens=config.num_query_tokens)
