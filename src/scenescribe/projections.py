"""Several linear projections of one input as one matrix product (decoding steps).

A decoding step multiplies a few rows by each weight: such a product is bound by reading the
weight and by its launch, so three projections of the same input (attention's q, k and v; an
MLP's gate and up) cost three launches where one product over their stacked weights reads the
same bytes once. ``one_product`` stacks them and turns each layer's own weight (and bias) into a
view of the stack: no second copy, and the model's own forward reads the very same numbers.
"""

from __future__ import annotations

from typing import Any


def one_product(module: Any, names: tuple[str, ...]) -> tuple[Any, Any] | None:
    """The projections ``names`` of ``module`` as one ``(weight, bias or None)`` for
    ``torch.nn.functional.linear``; their outputs side by side in ``names``' order. A missing
    bias beside biased ones is zeros (Whisper's key projection). None where they are not plain,
    alike ``torch.nn.Linear`` layers (quantized layers subclass it; an offloaded one's hook moves
    its weight)."""
    import torch

    parts = [getattr(module, n, None) for n in names]
    if not all(type(p) is torch.nn.Linear for p in parts):
        return None
    weights = [p.weight for p in parts]
    first = weights[0]
    if (not first.is_floating_point() or any(w.dtype != first.dtype or w.device != first.device
                                             or w.shape[1] != first.shape[1] for w in weights)
            or any(hasattr(p, "_hf_hook") for p in parts)):
        return None
    biased = any(p.bias is not None for p in parts)
    with torch.no_grad():
        weight = torch.cat([w.detach() for w in weights])
        bias = torch.cat([p.bias.detach() if p.bias is not None
                          else first.new_zeros(p.weight.shape[0]) for p in parts]) if biased \
            else None
        start = 0
        for part in parts:
            rows = part.weight.shape[0]
            part.weight = torch.nn.Parameter(weight[start:start + rows], requires_grad=False)
            if part.bias is not None and bias is not None:
                part.bias = torch.nn.Parameter(bias[start:start + rows], requires_grad=False)
            start += rows
    return weight, bias
