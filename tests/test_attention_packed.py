"""Grouped-query decoding without copying the cache: same numbers as transformers' SDPA, and only
grouped-query language models are switched to it."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from scenescribe.attention import PACKED_ENV, PACKED_SDPA, pack_grouped_decoding, packed_sdpa_attention

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
sys.path.insert(0, str(Path(__file__).parent))
from published_tiny import tiny_config  # noqa: E402


def left_padding_mask(lengths: list[int], total: int, queries: int) -> Any:
    """transformers' boolean SDPA mask (True: attend) for left-padded rows, causal over the last
    ``queries`` positions."""
    keys = torch.arange(total)
    rows = []
    for length in lengths:
        padded = keys >= total - length
        causal = keys[None, :] <= (total - queries + torch.arange(queries))[:, None]
        rows.append(padded[None, :] & causal)
    return torch.stack(rows)[:, None]  # (B, 1, queries, total)


@pytest.mark.parametrize("queries", [1, 5])
def test_packed_attention_matches_transformers_sdpa(queries: int) -> None:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    torch.manual_seed(0)
    batch, heads, kv_heads, keys, dim = 3, 8, 2, 9, 16
    module = SimpleNamespace(num_key_value_groups=heads // kv_heads, is_causal=True)
    query = torch.randn(batch, heads, queries, dim)
    key = torch.randn(batch, kv_heads, keys, dim)
    value = torch.randn(batch, kv_heads, keys, dim)
    mask = left_padding_mask([9, 4, 6], keys, queries)
    ours, _ = packed_sdpa_attention(module, query, key, value, mask, scaling=dim ** -0.5)
    theirs, _ = sdpa_attention_forward(module, query, key, value, mask, scaling=dim ** -0.5)
    assert ours.shape == (batch, queries, heads, dim)
    torch.testing.assert_close(ours, theirs)
    # Each query head reads its own group's key/value head: swapping the two groups' keys
    # must change the heads of both groups.
    swapped, _ = packed_sdpa_attention(module, query, key.flip(1), value.flip(1), mask,
                                       scaling=dim ** -0.5)
    assert not torch.allclose(swapped[:, :, :4], ours[:, :, :4])
    assert not torch.allclose(swapped[:, :, 4:], ours[:, :, 4:])


def tiny_llava() -> Any:
    from transformers import LlavaNextForConditionalGeneration

    torch.manual_seed(0)
    config = tiny_config("llava-v1.6-mistral-7b")
    config._attn_implementation = "sdpa"
    return LlavaNextForConditionalGeneration._from_config(config, dtype=torch.float32).eval()


def test_only_the_grouped_query_language_model_is_switched(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PACKED_ENV, raising=False)
    model = tiny_llava()
    assert pack_grouped_decoding(model) == ["MistralModel"]
    assert model.config.text_config._attn_implementation == PACKED_SDPA
    assert model.config.vision_config._attn_implementation == "sdpa"
    assert pack_grouped_decoding(model) == []  # already switched: nothing more to do


def test_the_environment_keeps_transformers_attention(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PACKED_ENV, "0")
    model = tiny_llava()
    assert pack_grouped_decoding(model) == []
    assert model.config.text_config._attn_implementation == "sdpa"


def spy_on_sdpa(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    """Records the query shape of every SDPA call from now on."""
    calls: list[tuple[int, ...]] = []
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(query: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(tuple(query.shape))
        return real(query, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    return calls


@pytest.mark.parametrize("cache", ["dynamic", "static"])
def test_left_padded_batch_decodes_the_same_tokens(cache: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import GenerationConfig, MistralForCausalLM

    monkeypatch.delenv(PACKED_ENV, raising=False)
    torch.manual_seed(0)
    config = tiny_config("llava-v1.6-mistral-7b").text_config
    config._attn_implementation = "sdpa"
    model = MistralForCausalLM._from_config(config, dtype=torch.float32).eval()
    ids = torch.randint(3, 500, (3, 12))
    mask = torch.ones_like(ids)
    mask[1, :7] = 0  # left padding, as the captioners batch prompts
    mask[2, :3] = 0
    settings = GenerationConfig(max_new_tokens=10, min_new_tokens=10, do_sample=False,
                                pad_token_id=0, eos_token_id=2, disable_compile=True,
                                cache_implementation=None if cache == "dynamic" else "static")
    with torch.no_grad():
        before = model.generate(input_ids=ids, attention_mask=mask, generation_config=settings,
                                output_scores=True, return_dict_in_generate=True)
        assert pack_grouped_decoding(model) == ["MistralForCausalLM"]
        calls = spy_on_sdpa(monkeypatch)
        after = model.generate(input_ids=ids, attention_mask=mask, generation_config=settings,
                               output_scores=True, return_dict_in_generate=True)
    # Every decoding step of both layers ran packed: 2 query heads per key/value head.
    packed = [shape for shape in calls if shape[1:3] == (2, 2)]
    assert len(packed) == 2 * 9, calls
    assert torch.equal(before.sequences, after.sequences)
    for a, b in zip(before.scores, after.scores, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
