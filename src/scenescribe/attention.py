"""Which fused attention kernels torch may pick on a GPU: flash and memory-efficient, not cuDNN.

Measured on the H200 (torch 2.11, ``benchmarks/gpu/profile_stage1.py``): in Whisper large-v3's
pooled decoding torch chose cuDNN's fused attention, which plans its kernel for each new
sequence length; as the key length grows by one every step, each call cost about 1 ms of CPU for
58 us of GPU work (14,432 calls: 15 s of CPU, 0.8 s of GPU), and the GPU sat idle. Flash and
memory-efficient attention take any length without planning. ``SCENESCRIBE_CUDNN_SDPA=1`` keeps
torch's own choice (for measuring the difference).
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger("scenescribe")
CUDNN_ENV = "SCENESCRIBE_CUDNN_SDPA"


def avoid_cudnn_attention(device: str) -> bool:
    """Turn cuDNN's SDPA kernel off process-wide on CUDA hosts; returns whether it did.

    Process-wide on purpose: torch's backend flags are global, and every model here decodes
    with a growing key length. Idempotent, so each GPU backend calls it at load.
    """
    if not device.startswith("cuda") or os.environ.get(CUDNN_ENV, "").strip() == "1":
        return False
    import torch

    if torch.backends.cuda.cudnn_sdp_enabled():
        torch.backends.cuda.enable_cudnn_sdp(False)
        log.info("cuDNN attention off: flash / memory-efficient SDPA kernels for decoding")
    return True
