"""transformers' Llama RMSNorm against the static decoder's fused one (``static_fusion``), at the
LLaVA-Vicuna prefill's shape (32 scenes of 3,970 tokens) and a decoding step's (32 rows), on
CUDA: milliseconds per call, the bytes one pass would move, and the largest difference.

    PYTHONPATH=src python3 benchmarks/gpu/norm_bench.py
"""

from __future__ import annotations

import torch
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from scenescribe.captions.static_fusion import fused_rms_norm


def timed(fn, x: torch.Tensor, repeats: int) -> float:  # type: ignore[no-untyped-def]
    for _ in range(3):
        fn(x)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        fn(x)
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / repeats


def main() -> None:
    hidden = 4096
    norm = LlamaRMSNorm(hidden, eps=1e-5).to("cuda", torch.bfloat16)
    torch.nn.init.normal_(norm.weight, 1.0, 0.2)
    fused = fused_rms_norm(norm.weight, norm.variance_epsilon)
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}")
    for label, rows, repeats in (("prefill 32 x 3970", 32 * 3970, 20), ("step 32 rows", 32, 2000)):
        x = torch.randn(rows, hidden, device="cuda", dtype=torch.bfloat16)
        with torch.inference_mode():
            ours, theirs = timed(fused, x, repeats), timed(norm, x, repeats)
            diff = (fused(x).float() - norm(x).float()).abs().max().item()
        gb = 2 * x.numel() * x.element_size() / 1e9
        print(f"{label:18} transformers {theirs:8.3f} ms   fused {ours:8.3f} ms   "
              f"({gb / ours * 1e3 if ours else 0:6.0f} GB/s one pass)   max diff {diff:.3g}")


if __name__ == "__main__":
    main()
