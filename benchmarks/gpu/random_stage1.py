"""Build a model folder with Stage 1's GPU models at full size, random weights, for timing.

The GPU machine has no model hub. This writes, under ``OUT`` (use it as ``--model-dir``):

* ``whisper/hf-whisper-large-v3``: Whisper large-v3's architecture (32+32 layers, d_model 1280,
  128 mel bins) with random fp16 weights. Its tokenizer, special-token ids and generation config
  come from the real tiny.en folder (``--whisper-tokenizer``): the English vocabulary (51,864
  tokens) instead of large-v3's 51,866, which changes nothing measurable. Alignment heads: the
  10 of the published large-v3 list. Random weights rarely emit end-of-text, so each chunk
  decodes the full 224 tokens: the worst case of a real run (about 100 for dense speech).
* ``audio_tagging/ast-finetuned-audioset-10-10-0.4593``: AST's published configuration (the
  transformers defaults: 12 layers, 768 wide, 1024 frames of 128 mel bins, strides 10) with 527
  labels, random weights, and the AudioSet feature extractor.
* ``yolo/yolov8n.pt``: copied from ``--yolo`` (real weights; they are small enough to carry).

    python benchmarks/gpu/random_stage1.py OUT --whisper-tokenizer DIR --yolo FILE
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

# Whisper large-v3's alignment heads (layer, head), as openai-whisper publishes them.
LARGE_V3_HEADS = [[7, 0], [10, 17], [12, 18], [13, 12], [16, 1], [17, 14], [19, 11], [21, 4],
                  [24, 1], [25, 6]]
LARGE_V3 = {"d_model": 1280, "num_mel_bins": 128, "encoder_layers": 32, "decoder_layers": 32,
            "num_hidden_layers": 32, "encoder_attention_heads": 20,
            "decoder_attention_heads": 20, "encoder_ffn_dim": 5120, "decoder_ffn_dim": 5120}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def build_whisper(out: Path, tokenizer_dir: Path, device: str) -> Path:
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    target = out / "whisper" / "hf-whisper-large-v3"
    target.mkdir(parents=True, exist_ok=True)
    config = json.loads((tokenizer_dir / "config.json").read_text())
    config.update(LARGE_V3, torch_dtype="float16")
    with torch.device(device):
        model = WhisperForConditionalGeneration(WhisperConfig(**config)).half()
    model.save_pretrained(target)
    generation = json.loads((tokenizer_dir / "generation_config.json").read_text())
    generation["alignment_heads"] = LARGE_V3_HEADS
    (target / "generation_config.json").write_text(json.dumps(generation, indent=1))
    features = json.loads((tokenizer_dir / "preprocessor_config.json").read_text())
    features["feature_size"] = 128
    (target / "preprocessor_config.json").write_text(json.dumps(features, indent=1))
    for name in TOKENIZER_FILES:
        shutil.copy(tokenizer_dir / name, target / name)
    return target


def build_ast(out: Path, device: str) -> Path:
    import torch
    from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

    target = out / "audio_tagging" / "ast-finetuned-audioset-10-10-0.4593"
    labels = {i: f"AudioSet class {i}" for i in range(527)}
    config = ASTConfig(num_labels=527, id2label=labels, label2id={v: k for k, v in labels.items()})
    with torch.device(device):
        model = ASTForAudioClassification(config)
    model.save_pretrained(target)
    ASTFeatureExtractor().save_pretrained(target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--whisper-tokenizer", type=Path, required=True,
                        help="a real Whisper folder (tiny.en) for tokenizer and configs")
    parser.add_argument("--yolo", type=Path, required=True, help="yolov8n.pt")
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    print("built", build_whisper(args.out, args.whisper_tokenizer, args.device))
    print("built", build_ast(args.out, args.device))
    (args.out / "yolo").mkdir(parents=True, exist_ok=True)
    shutil.copy(args.yolo, args.out / "yolo" / "yolov8n.pt")
    print(f"random Stage 1 models in {args.out} ({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
