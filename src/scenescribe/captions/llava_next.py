"""LLaVA-v1.6 (LLaVA-NeXT), Vicuna-7B and Mistral-7B: one ``<image>`` per frame, AnyRes tiling.

The chat format comes from the checkpoint's processor: Mistral ``[INST] <image>\\n... [/INST]``,
Vicuna ``<system> USER: <image>\\n... ASSISTANT:``. Vicuna's template prints the system prompt
it was trained with only when given a system message, so one is passed. Offline builds (tiny
tests, random-weight benchmarks) carry the same templates (scenescribe.testing.stand_ins).
"""

from __future__ import annotations

from typing import Any

from scenescribe.captions.base import CaptionRequest
from scenescribe.captions.hf_base import TransformersCaptioner

IMAGE_TOKEN = "<image>"
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
