"""On CUDA: the caption stage's own stream with the static decoder's CUDA graphs gives
``generate``'s tokens, for tiny published-layout checkpoints (tests/published_tiny.py).

    python3 benchmarks/gpu/smoke_caption_stream.py OUT_DIR [DEVICE]   (default cuda)

Prints, per family: whether the stage had its own stream, graphs captured, whether the prefill
wrote into the decoder's buffers, and tokens equal (with the step's SDPA attention; how many
captions equal with its matmul attention, the CUDA default).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))

from PIL import Image

from published_tiny import build
from scenescribe import registry
from scenescribe.captions.base import CaptionRequest
from scenescribe.options import CaptionOptions


def main(out: Path, device: str) -> int:
    frames = []
    for i, (size, colour) in enumerate([((64, 36), (200, 40, 40)), ((48, 64), (40, 200, 90)),
                                        ((80, 60), (10, 10, 200))]):
        frames.append(str(out / f"f{i}.jpg"))
        out.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, colour).save(frames[-1])
    scenes = [CaptionRequest(0, (frames[0], frames[1])),
              CaptionRequest(1, (frames[2],), "Speech: hello."),
              CaptionRequest(2, (frames[1], frames[2], frames[0]), "Speech: a longer context.")]
    bad = 0
    for name in ("llava-v1.6-mistral-7b", "phi-3.5-vision", "instructblip-vicuna-7b"):
        folder = build(name, out / name)
        got = {}
        for decoder, attention in (("generate", None), ("graph", "sdpa"), ("graph", "matmul")):
            options = CaptionOptions(weights=str(folder), max_new_tokens=12, decoder=decoder)
            model = registry.create(name, "captioner", options=options, device=device,
                                    model_dir=None)
            model.load()
            if model._static is not None:
                model._static.attention = attention
            label = decoder if attention is None else f"{decoder}/{attention}"
            got[label] = [(c.text, c.new_tokens) for _, c in model.generate(scenes)]
            captures = getattr(model._static, "captures", 0) if model._static else 0
            in_place = getattr(model._static, "in_place", None) if model._static else None
            print(f"{name} {label}: own stream {model._stream is not None}, "
                  f"graphs captured {captures}, prefill into the buffers {in_place}")
            model.unload()
        # SDPA is generate's kernel: the same tokens expected. The matmul kind rounds the
        # probabilities to bf16 before the values (as flash attention does): on tiny random
        # checkpoints, whose logits nearly tie, a token may differ (2026-12-03: it did).
        same = got["generate"] == got["graph/sdpa"]
        bad += not same
        agree = sum(a == b for a, b in zip(got["generate"], got["graph/matmul"], strict=True))
        print(f"{name}: graph tokens equal generate's: {same}; with the matmul attention "
              f"{agree} of {len(scenes)} captions equal")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "cuda"))
