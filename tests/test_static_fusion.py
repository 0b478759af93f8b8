"""The static decoder's rewrites of a language model (``captions.static_fusion``): the same
outputs, norms in one kernel, projections sharing one weight, and only layers it knows."""

from __future__ import annotations

from typing import Any

import pytest

from scenescribe.captions import static_fusion

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def tiny(kind: str = "llama", **config: Any) -> Any:
    configs = {"llama": transformers.LlamaConfig, "mistral": transformers.MistralConfig,
               "qwen2": transformers.Qwen2Config}
    settings = {"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
                "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 101, **config}
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(configs[kind](**settings))
    for norm in (m for m in model.modules() if type(m).__name__.endswith("RMSNorm")):
        torch.nn.init.normal_(norm.weight, 1.0, 0.2)  # not all ones: the weight must count
    return model.eval()


@pytest.mark.parametrize("kind", ["llama", "mistral", "qwen2"])
def test_the_rewritten_model_computes_what_it_did(kind: str) -> None:
    model = tiny(kind)
    ids = torch.randint(0, 101, (3, 11))
    with torch.no_grad():
        before = model(ids).logits
        fusion = static_fusion.fuse(model.model)
        after = model(ids).logits
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
    norms = [m for m in model.modules() if type(m).__name__ == "FusedRMSNorm"]
    assert len(norms) == 2 * 2 + 1  # two per layer and the final one
    assert not [m for m in model.modules() if type(m).__name__.endswith("RMSNorm")
                and type(m).__name__ != "FusedRMSNorm"]
    for layer, fused in zip(model.model.layers, fusion, strict=True):
        assert fused.qkv is not None and fused.gate_up is not None
        weight, bias = fused.qkv
        attn = layer.self_attn
        assert weight.shape == (64 + 2 * 32, 64) and (bias is not None) == (kind == "qwen2")
        # Views of the one weight: no second copy, and the prefill reads the same numbers.
        assert attn.k_proj.weight.data_ptr() == weight[64:].data_ptr()
        assert layer.mlp.up_proj.weight.data_ptr() == fused.gate_up[0][96:].data_ptr()
        x = torch.randn(2, 1, 64)
        gate, up = torch.nn.functional.linear(x, *fused.gate_up).chunk(2, dim=-1)
        torch.testing.assert_close(gate, layer.mlp.gate_proj(x))
        torch.testing.assert_close(up, layer.mlp.up_proj(x))


def test_the_fused_norm_matches_transformers_in_bf16_to_the_last_bit_or_so() -> None:
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    norm = LlamaRMSNorm(256, eps=1e-5).to(torch.bfloat16)
    torch.nn.init.normal_(norm.weight, 1.0, 0.3)
    x = (torch.randn(64, 256) * 3).to(torch.bfloat16)
    fused = static_fusion.fused_rms_norm(norm.weight, norm.variance_epsilon)
    got, want = fused(x), norm(x)
    assert got.dtype == torch.bfloat16
    # transformers rounds before the weight, the fused kernel once after: at most a bf16 step.
    torch.testing.assert_close(got.float(), want.float(), rtol=2 ** -7, atol=1e-6)
    wide = fused(x.float())  # another dtype than the weight's: transformers' own promotion
    torch.testing.assert_close(wide, norm(x.float()))


def test_unknown_norms_and_quantized_or_unlike_projections_are_left_alone() -> None:
    model = tiny()

    class OtherNorm(torch.nn.Module):  # Gemma's (1 + weight) and the like: not ours to swap
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(64))
            self.variance_epsilon = 1e-6

    class Quantized(torch.nn.Linear):  # bitsandbytes' 4-bit layers subclass Linear
        pass

    first, second = model.model.layers
    first.input_layernorm = OtherNorm()
    attn = first.self_attn
    attn.q_proj = Quantized(64, 64, bias=False)
    second.mlp.up_proj = torch.nn.Linear(64, 96).double()  # unlike its neighbour
    first.mlp.up_proj = torch.nn.Linear(64, 96, bias=True)  # biased beside unbiased: zeros
    x = torch.randn(2, 1, 64)
    gate, up = first.mlp.gate_proj(x), first.mlp.up_proj(x)
    fusion = static_fusion.fuse(model.model)
    assert type(first.input_layernorm) is OtherNorm
    assert fusion[0].qkv is None and fusion[0].gate_up is not None
    assert fusion[1].qkv is not None and fusion[1].gate_up is None
    assert type(attn.q_proj) is Quantized and first.mlp.gate_proj.bias is None
    both = torch.nn.functional.linear(x, *fusion[0].gate_up)
    torch.testing.assert_close(both, torch.cat((gate, up), dim=-1))
