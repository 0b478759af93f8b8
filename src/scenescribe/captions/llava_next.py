"""LLaVA-v1.6 (LLaVA-NeXT), Vicuna-7B and Mistral-7B: one ``<image>`` per frame, AnyRes tiling.

The chat format comes from the checkpoint's processor: Mistral ``[INST] <image>\\n... [/INST]``,
Vicuna ``<system> USER: <image>\\n... ASSISTANT:``. Vicuna's template prints the system prompt
it was trained with only when given a system message, so one is passed. Offline builds (tiny
tests, random-weight benchmarks) carry the same templates.
"""

from __future__ import annotations

from typing import Any

from scenescribe.captions.base import CaptionRequest
from scenescribe.captions.hf_base import TransformersCaptioner

IMAGE_TOKEN = "<image>"
# CLIP ViT-L/14 at 336 px, the vision tower of both checkpoints.
CLIP_L14_336 = {"hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16,
                "num_hidden_layers": 24, "image_size": 336, "patch_size": 14,
                "projection_dim": 768, "vocab_size": 32000, "hidden_act": "quick_gelu"}
PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
# Published text configs (llava-hf/llava-v1.6-*-hf config.json).
TEXT_CONFIGS: dict[str, dict[str, Any]] = {
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
# The chat templates of the llava-hf checkpoints (chat_template.json; tests/fixtures/published).
# Vicuna's prints its system prompt only when a system message is passed.
CHAT_TEMPLATES = {
    "mistral": (
        "{% for message in messages %}{% if message['role'] == 'system' %}"
        "{{ '<<SYS>>\\n' + message['content'][0]['text'] + '\\n<</SYS>>\\n\\n' }}"
        "{% elif message['role'] == 'user' %}{{ '[INST] ' }}"
        "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
        "{{ '<image>\\n' }}{% endfor %}"
        "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
        "{{ content['text'] }}{% endfor %}{{' [/INST]' }}"
        "{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'][0]['text'] + '<\\s> '}}"
        "{% endif %}{% endfor %}"),
    "llama": (
        "{% for message in messages %}{% if message['role'] != 'system' %}"
        "{{ message['role'].upper() + ': '}}{% endif %}"
        "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
        "{{ '<image>\\n' }}{% endfor %}"
        "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
        "{{ content['text'] + ' '}}{% endfor %}{% endfor %}"
        "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"),
}
# The system prompt LLaVA-1.6 Vicuna was trained with (LLaVA's conv_vicuna_v1).
VICUNA_SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. The "
                 "assistant gives helpful, detailed, and polite answers to the human's questions.")
SYSTEM_PROMPTS = {"llava-v1.6-vicuna-7b": VICUNA_SYSTEM}


class LlavaNextCaptioner(TransformersCaptioner):
    """LLaVA-NeXT: each sampled frame is one image, tiled by AnyRes inside the processor."""

    model_class_name = "LlavaNextForConditionalGeneration"
    end_tokens = ("</s>",)

    def messages(self, request: CaptionRequest, n_images: int) -> list[dict[str, Any]]:
        """The user turn, after the checkpoint's trained system prompt where it has one."""
        turns = super().messages(request, n_images)
        system = SYSTEM_PROMPTS.get(self.name)
        if system:
            turns.insert(0, {"role": "system", "content": [{"type": "text", "text": system}]})
        return turns

    @classmethod
    def published_config(cls, name: str) -> Any:
        from transformers import LlavaNextConfig

        if name not in TEXT_CONFIGS:
            raise ValueError(f"no published config for {name!r}; known: {sorted(TEXT_CONFIGS)}")
        return LlavaNextConfig(
            text_config=dict(TEXT_CONFIGS[name]), vision_config={
                "model_type": "clip_vision_model", **CLIP_L14_336},
            image_token_index=32000, image_grid_pinpoints=PINPOINTS,
            vision_feature_select_strategy="default", vision_feature_layer=-2,
            projector_hidden_act="gelu", tie_word_embeddings=False)

    @classmethod
    def offline_processor(cls, name: str, config: Any) -> Any:
        """Tokenizer built in code, the AnyRes image processor sized to the vision tower."""
        from transformers import LlavaNextImageProcessor, LlavaNextProcessor

        from scenescribe.captions.offline import code_tokenizer

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
