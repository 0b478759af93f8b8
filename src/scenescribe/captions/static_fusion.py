"""Fewer, larger kernels in a language model the static decoder runs (``static_decode``).

Two rewrites of a loaded checkpoint, neither changing what it computes beyond rounding:

- **RMSNorm in one kernel.** transformers' Llama-family norm (Llama, Mistral, Qwen2, Phi-3) is
  six elementwise kernels over a float32 copy of its input (upcast, square, mean, scale,
  downcast, weight); ``torch.nn.functional.rms_norm`` is one pass that keeps float32 inside.
  Profiled on an H200 (LLaVA-Vicuna, 36 scenes of 3,970 tokens, ``benchmarks/NOTES.md``), half
  the prefill's time was such elementwise work and copies; in a decoding step each norm is six
  launches of a few microseconds, 65 norms per token.
- **One product for q, k and v, and one for gate and up.** Their weights become views of one
  tensor (no second copy), so the prefill's forward reads them as before and the step
  (``LayerFusion``) runs one matrix product where it ran three (two), reading the same bytes.
  Phi-3 ships both fused already.

The one difference: the norm multiplies by its weight in float32 before rounding once, where
transformers rounds, then multiplies in the model's dtype (a last-bit difference in bf16; equal
in float32). Applied only with the static decoder: ``generate`` and the reference rows run the
checkpoint's own modules.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any

from scenescribe.projections import one_product

log = logging.getLogger("scenescribe.captions")

# Norm classes whose forward is exactly ``weight * (x.float() * rsqrt(mean(x^2) + eps)).to(dtype)``
# (checked against transformers 5.17-5.24). Gemma's (1 + weight) and others are left alone.
RMS_NORMS = frozenset({"LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm", "Phi3RMSNorm"})


@dataclass(frozen=True, slots=True)
class LayerFusion:
    """One decoder layer's fused projections: ``(weight, bias or None)`` or None where the
    layer keeps its own (already fused, quantized, or not laid out as Llama's)."""

    qkv: tuple[Any, Any] | None
    gate_up: tuple[Any, Any] | None


def fuse(body: Any) -> list[LayerFusion]:
    """Rewrite the decoder ``body`` (``static_layout.LanguageModel.body``) in place: its
    RMSNorms fused, each layer's projections sharing one weight. Returns per layer what the step
    reads."""
    norms = fuse_norms(body)
    layers = [LayerFusion(one_product(layer.self_attn, ("q_proj", "k_proj", "v_proj")),
                          one_product(getattr(layer, "mlp", None), ("gate_proj", "up_proj")))
              for layer in body.layers]
    log.info("static decoder: %d RMSNorms fused; q/k/v in one product in %d of %d layers, "
             "gate/up in %d", norms, sum(f.qkv is not None for f in layers), len(layers),
             sum(f.gate_up is not None for f in layers))
    return layers


def fuse_norms(module: Any) -> int:
    """Swap every known RMSNorm inside ``module`` for ``FusedRMSNorm`` (same weight object);
    returns how many."""
    swaps = [(parent, name, child) for parent in module.modules()
             for name, child in parent.named_children()
             if type(child).__name__ in RMS_NORMS and _plain_norm(child)]
    for parent, name, child in swaps:
        setattr(parent, name, fused_rms_norm(child.weight, float(child.variance_epsilon)))
    return len(swaps)


def fused_rms_norm(weight: Any, eps: float) -> Any:
    """A module computing Llama's RMSNorm with ``weight`` in one ``F.rms_norm`` call."""
    return _norm_class()(weight, eps)


@functools.cache
def _norm_class() -> type:
    import torch

    class FusedRMSNorm(torch.nn.Module):
        """Llama's RMSNorm as one ``F.rms_norm`` (see the module docstring)."""

        def __init__(self, weight: torch.nn.Parameter, eps: float) -> None:
            super().__init__()
            self.weight = weight
            self.variance_epsilon = eps

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            eps = self.variance_epsilon
            if x.dtype != self.weight.dtype:  # transformers' promotion, as its own forward
                wide = x.float()
                norm = wide * torch.rsqrt(wide.pow(2).mean(-1, keepdim=True) + eps)
                return self.weight * norm.to(x.dtype)
            return torch.nn.functional.rms_norm(x, (x.shape[-1],), self.weight, eps)

    return FusedRMSNorm


def _plain_norm(norm: Any) -> bool:
    weight = getattr(norm, "weight", None)
    return (weight is not None and weight.dim() == 1 and weight.is_floating_point()
            and isinstance(getattr(norm, "variance_epsilon", None), float))
