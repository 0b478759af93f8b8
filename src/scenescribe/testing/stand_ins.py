"""Full-size architectures and processors built in code, for ``--random-weights`` benchmarks.

Real VLM checkpoints cannot be had on the benchmark machines, so ``published_config(name)``
builds each registry model's architecture from its published hyperparameters and
``offline_processor(name, config)`` a processor for it: a tokenizer built in code with the
model's special tokens at their published ids (tests/fixtures/published), the family's image
processor and chat template. Nothing is downloaded; imported lazily (transformers needed).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from scenescribe.testing.code_tokenizers import code_tokenizer

# ---- LLaVA-v1.6 (llava-hf/llava-v1.6-*-hf) --------------------------------------------------

# CLIP ViT-L/14 at 336 px, the vision tower of both checkpoints.
CLIP_L14_336 = {"hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16,
                "num_hidden_layers": 24, "image_size": 336, "patch_size": 14,
                "projection_dim": 768, "vocab_size": 32000, "hidden_act": "quick_gelu"}
PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
LLAVA_TEXT: dict[str, dict[str, Any]] = {
    "llava-v1.6-mistral-7b": {
        "model_type": "mistral", "hidden_size": 4096, "intermediate_size": 14336,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
        "max_position_embeddings": 32768, "rms_norm_eps": 1e-5, "rope_theta": 1e6,
        "sliding_window": None, "vocab_size": 32064},
    "llava-v1.6-vicuna-7b": {
        "model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "vocab_size": 32064},
}


def llava_config(name: str) -> Any:
    from transformers import LlavaNextConfig

    return LlavaNextConfig(
        text_config=dict(LLAVA_TEXT[name]), vision_config={
            "model_type": "clip_vision_model", **CLIP_L14_336},
        image_token_index=32000, image_grid_pinpoints=PINPOINTS,
        vision_feature_select_strategy="default", vision_feature_layer=-2,
        projector_hidden_act="gelu", tie_word_embeddings=False)


def llava_processor(name: str, config: Any) -> Any:
    """Tokenizer built in code, the AnyRes image processor sized to the vision tower."""
    from transformers import LlavaNextImageProcessor, LlavaNextProcessor

    from scenescribe.captions.llava_next import CHAT_TEMPLATES, IMAGE_TOKEN

    text = config.get_text_config()
    image_id = config.image_token_index
    tokenizer = code_tokenizer(
        text.vocab_size, {"<unk>": 0, "<s>": 1, "</s>": 2, IMAGE_TOKEN: image_id,
                          "<pad>": image_id + 1},
        bos="<s>", eos="</s>", pad="<pad>", unk="<unk>", wrap=("<s>", None),
        named={"image_token": IMAGE_TOKEN})
    side = config.vision_config.image_size
    image_processor = LlavaNextImageProcessor(
        size={"shortest_edge": side}, crop_size={"height": side, "width": side},
        image_grid_pinpoints=config.image_grid_pinpoints, do_pad=True)
    family = "mistral" if text.model_type == "mistral" else "llama"
    return LlavaNextProcessor(
        image_processor=image_processor, tokenizer=tokenizer,
        patch_size=config.vision_config.patch_size,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        num_additional_image_tokens=1, chat_template=CHAT_TEMPLATES[family])


# ---- InstructBLIP (Salesforce/instructblip-vicuna-7b) -------------------------------------------

# EVA ViT-g/14 at 224 px (the defaults of InstructBlipVisionConfig), a BERT-base Q-Former with 32
# queries, Vicuna-7B v1.1 with its vocabulary padded to 32,064.
VICUNA_7B = {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008,
             "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
             "max_position_embeddings": 2048, "rms_norm_eps": 1e-6, "vocab_size": 32064,
             "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 32000}
BLIP_IMAGE_ID = 32001  # "<image>"; "[PAD]" is 32000
QFORMER_VOCAB = 30523  # bert-base-uncased plus BLIP-2's [DEC]


def instructblip_config(name: str) -> Any:
    from transformers import InstructBlipConfig

    return InstructBlipConfig(
        vision_config={}, qformer_config={"vocab_size": QFORMER_VOCAB},
        text_config=dict(VICUNA_7B), num_query_tokens=32, image_token_index=BLIP_IMAGE_ID)


def instructblip_processor(name: str, config: Any) -> Any:
    from transformers import BlipImageProcessor, InstructBlipProcessor
    from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

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


# ---- Qwen2.5-VL (Qwen/Qwen2.5-VL-7B-Instruct) ---------------------------------------------------

QWEN_TEXT_7B = {"hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
                "num_attention_heads": 28, "num_key_value_heads": 4,
                "max_position_embeddings": 128000, "rms_norm_eps": 1e-6, "vocab_size": 152064,
                "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
                "rope_theta": 1e6, "bos_token_id": 151643, "eos_token_id": 151645,
                "tie_word_embeddings": False}
QWEN_VISION_7B = {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,
                  "out_hidden_size": 3584, "patch_size": 14, "spatial_merge_size": 2,
                  "temporal_patch_size": 2, "window_size": 112, "tokens_per_second": 2,
                  "fullatt_block_indexes": [7, 15, 23, 31], "hidden_act": "silu"}
# Special tokens after the 151,643 learned ones, at their published ids.
QWEN_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>",
                 "<|object_ref_end|>", "<|box_start|>", "<|box_end|>", "<|quad_start|>",
                 "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
                 "<|image_pad|>", "<|video_pad|>")
QWEN_FIRST_SPECIAL = 151643
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}{% else %}{% for c in message['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def qwen_special_ids(first: int) -> dict[str, int]:
    return {name: first + i for i, name in enumerate(QWEN_SPECIALS)}


def qwen_config(name: str) -> Any:
    from transformers import Qwen2_5_VLConfig

    ids = qwen_special_ids(QWEN_FIRST_SPECIAL)
    return Qwen2_5_VLConfig(
        text_config=dict(QWEN_TEXT_7B), vision_config=dict(QWEN_VISION_7B),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=False)


def qwen_processor(name: str, config: Any) -> Any:
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    text = config.get_text_config()
    ids = qwen_special_ids(config.vision_start_token_id
                           - QWEN_SPECIALS.index("<|vision_start|>"))
    tokenizer = code_tokenizer(text.vocab_size, ids, eos="<|im_end|>", pad="<|endoftext|>")
    vision = config.vision_config
    factor = vision.patch_size * vision.spatial_merge_size
    grid = {"patch_size": vision.patch_size, "temporal_patch_size": vision.temporal_patch_size,
            "merge_size": vision.spatial_merge_size}
    image_processor = Qwen2VLImageProcessor(
        size={"shortest_edge": 4 * factor**2, "longest_edge": 16384 * factor**2}, **grid)
    video_processor = Qwen2VLVideoProcessor(  # unused for frames; the processor requires one
        size={"shortest_edge": 128 * factor**2, "longest_edge": 768 * factor**2}, **grid)
    return Qwen2_5_VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                               video_processor=video_processor,
                               chat_template=QWEN_CHAT_TEMPLATE)


# ---- SmolVLM2 (HuggingFaceTB/SmolVLM2-500M-Video-Instruct) --------------------------------------

# SmolLM2-360M text model, SigLIP base/16 at 512 px, pixel shuffle by 4 (64 tokens per tile).
SMOL_TEXT_500M = {"model_type": "llama", "hidden_size": 960, "intermediate_size": 2560,
                  "num_hidden_layers": 32, "num_attention_heads": 15, "num_key_value_heads": 5,
                  "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "rope_theta": 100000.0,
                  "vocab_size": 49280, "pad_token_id": 2, "bos_token_id": 1,
                  "eos_token_id": 49279, "tie_word_embeddings": False}
SMOL_VISION_500M = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                    "num_attention_heads": 12, "image_size": 512, "patch_size": 16}
SMOL_IMAGE_TOKEN_ID = 49190
SMOL_GRID = 6  # <row_1_col_1> .. <row_6_col_6>
SMOL_CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}")


def smolvlm_special_ids(vocab_size: int, image_id: int) -> dict[str, int]:
    """Published layout: text specials first, the image tokens around ``image_id``, EOU last."""
    ids = {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2}
    grid = [f"<row_{r}_col_{c}>" for r in range(1, SMOL_GRID + 1) for c in range(1, SMOL_GRID + 1)]
    first = image_id - 2 - len(grid)
    ids["<global-img>"] = first
    ids.update({name: first + 1 + i for i, name in enumerate(grid)})
    ids["<fake_token_around_image>"] = image_id - 1
    ids["<image>"] = image_id
    ids["<end_of_utterance>"] = vocab_size - 1
    return ids


def smolvlm_config(name: str) -> Any:
    from transformers import SmolVLMConfig

    return SmolVLMConfig(text_config=dict(SMOL_TEXT_500M), vision_config=dict(SMOL_VISION_500M),
                         image_token_id=SMOL_IMAGE_TOKEN_ID, scale_factor=4,
                         tie_word_embeddings=False)


def smolvlm_processor(name: str, config: Any) -> Any:
    from transformers import SmolVLMImageProcessor, SmolVLMProcessor, SmolVLMVideoProcessor

    text = config.get_text_config()
    ids = smolvlm_special_ids(text.vocab_size, config.image_token_id)
    tokenizer = code_tokenizer(
        text.vocab_size, ids, bos="<|im_start|>", eos="<end_of_utterance>",
        pad="<|im_end|>", unk="<|endoftext|>",
        named={"image_token": "<image>", "fake_image_token": "<fake_token_around_image>",
               "global_image_token": "<global-img>",
               "end_of_utterance_token": "<end_of_utterance>"})
    side = config.vision_config.image_size
    tile = {"longest_edge": side}
    half = {"image_mean": [0.5] * 3, "image_std": [0.5] * 3}
    image_processor = SmolVLMImageProcessor(
        do_image_splitting=True, max_image_size=tile, size={"longest_edge": 4 * side}, **half)
    video_processor = SmolVLMVideoProcessor(
        max_image_size=tile, size=tile, **half,
        video_sampling={"fps": 1, "max_frames": 64, "video_size": tile})
    seq_len = (side // config.vision_config.patch_size) ** 2 // config.scale_factor ** 2
    return SmolVLMProcessor(image_processor=image_processor, tokenizer=tokenizer,
                            video_processor=video_processor, image_seq_len=seq_len,
                            chat_template=SMOL_CHAT_TEMPLATE)


# ---- Phi-3.5-Vision (microsoft/Phi-3.5-vision-instruct) -----------------------------------------

PHI3_SPECIALS = {"<unk>": 0, "<s>": 1, "</s>": 2, "<|endoftext|>": 32000, "<|assistant|>": 32001,
                 "<|system|>": 32006, "<|end|>": 32007, "<|user|>": 32010}


def phi3v_config(name: str) -> Any:
    """Full-size Phi-3.5-Vision (Phi-3-mini 3.8B + CLIP ViT-L/14-336) from published values.

    The LongRoPE factors are placeholders (1.0), which changes no shape or cost.
    """
    from scenescribe.captions.phi3v_model import SUPPORTED_EMBD_LAYER, Phi3VConfig

    head_half = 3072 // 32 // 2
    return Phi3VConfig(
        vocab_size=32064, hidden_size=3072, intermediate_size=8192, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=131072,
        original_max_position_embeddings=4096,
        rope_scaling={"type": "su", "short_factor": [1.0] * head_half,
                      "long_factor": [1.0] * head_half},
        rope_theta=10000.0, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2,
        pad_token_id=32000, sliding_window=262144, tie_word_embeddings=False,
        img_processor={"image_dim_out": 1024, "name": "clip_vision_model",
                       "model_name": "openai/clip-vit-large-patch14-336", "num_img_tokens": 144},
        embd_layer=dict(SUPPORTED_EMBD_LAYER))


def phi3v_processor(name: str, config: Any) -> Any:
    from scenescribe.captions.phi3v import NUM_CROPS
    from scenescribe.captions.phi3v_processing import Phi3VImageProcessor, Phi3VProcessor

    tokenizer = code_tokenizer(config.vocab_size, PHI3_SPECIALS, bos="<s>",
                               eos="<|endoftext|>", pad="<|endoftext|>", unk="<unk>",
                               add_bos=True)  # Phi-3's Llama tokenizer starts with BOS
    return Phi3VProcessor(tokenizer, Phi3VImageProcessor(NUM_CROPS),
                          pad_token_id=config.pad_token_id)


# ---- by registry name -------------------------------------------------------------------------

STAND_INS: dict[str, tuple[Callable[[str], Any], Callable[[str, Any], Any]]] = {
    "llava-v1.6-vicuna-7b": (llava_config, llava_processor),
    "llava-v1.6-mistral-7b": (llava_config, llava_processor),
    "instructblip-vicuna-7b": (instructblip_config, instructblip_processor),
    "qwen2.5-vl-7b": (qwen_config, qwen_processor),
    "smolvlm2": (smolvlm_config, smolvlm_processor),
    "phi-3.5-vision": (phi3v_config, phi3v_processor),
}


def _stand_in(name: str) -> tuple[Callable[[str], Any], Callable[[str, Any], Any]]:
    if name not in STAND_INS:
        raise ValueError(f"no built-in config for {name!r}; known: {', '.join(sorted(STAND_INS))}")
    return STAND_INS[name]


def published_config(name: str) -> Any:
    """Full-size config of registry model ``name`` from its published hyperparameters."""
    return _stand_in(name)[0](name)


def offline_processor(name: str, config: Any) -> Any:
    """A processor for ``config`` built in code (tokenizer, image processor, chat format)."""
    return _stand_in(name)[1](name, config)


def random_model(model_class: Any, config: Any, device: str, dtype: Any) -> Any:
    """The architecture of ``config`` with random weights, created directly on ``device``.

    Parameters are allocated and initialised on the target device (no CPU copy of a 7B model).
    """
    import torch

    with torch.device(device):
        model = model_class._from_config(config, dtype=dtype)
    return model.eval()


def build_random(name: str, device: str = "cuda", dtype: str = "bfloat16") -> tuple[Any, Any]:
    """Full-size model ``name`` with random weights, and its offline processor."""
    import torch

    from scenescribe import registry

    cls = registry.get_entry(name, "captioner").load_class()
    config = published_config(name)
    processor = offline_processor(name, config)
    model = random_model(cls.transformers_class(), config, device, getattr(torch, dtype))
    return model, processor
