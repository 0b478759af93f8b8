"""Phi-3.5-Vision, native build: a tiny checkpoint in the official layout, loaded the real way.

The tiny model is random-weights Phi-3 + CLIP at the official geometry (336-px crops, 14-px
patches, 2x2 merge, 12x12 tokens a crop), so prompts carry the real number of image tokens.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scenescribe.captions.base import CaptionRequest
from scenescribe.captions.phi3v_processing import (
    Phi3VImageProcessor,
    Phi3VProcessor,
    chat_prompt,
    hd_size,
)
from scenescribe.options import CaptionOptions
from scenescribe.progress import NullProgress
from scenescribe.registry import create
from scenescribe.testing.phi3v_tiny import build_tiny_phi3v, build_tiny_tokenizer

NAME = "phi-3.5-vision"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("phi3v_models")
    build_tiny_phi3v(root / "Phi-3.5-vision-instruct")
    return root


@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """JPEG frames: 16:9, 4:3 and portrait, smooth gradients with noise."""
    folder = tmp_path_factory.mktemp("phi3v_frames")
    rng = np.random.default_rng(7)
    paths = []
    for i, (w, h) in enumerate([(192, 108), (160, 120), (90, 160)]):
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([x * 255 // w, y * 255 // h, (x + y) * 127 // (w + h)], axis=-1)
        noisy = np.clip(base + rng.integers(-30, 30, base.shape), 0, 255).astype(np.uint8)
        path = folder / f"frame{i}.jpg"
        Image.fromarray(noisy).save(path, quality=90)
        paths.append(str(path))
    return paths


def _captioner(model_dir: Path, **options: object):
    opts = CaptionOptions(prompt="Describe the scene.", max_new_tokens=4, **options)
    return create(NAME, "captioner", options=opts, device="cpu", model_dir=model_dir)


def _inputs(cap, requests: list[CaptionRequest]) -> dict:
    images = [cap.images(r) for r in requests]
    prompts = [cap.prompt(r, len(im)) for r, im in zip(requests, images, strict=True)]
    return cap._to_device(cap.encode(images, prompts))


def _expected_tokens(width: int, height: int, num_crops: int) -> int:
    """Image tokens written out from the official recipe, independent of the library code."""
    long_side, short_side = max(width, height), min(width, height)
    aspect = long_side / short_side
    scale = max(s for s in range(1, num_crops + 1) if s * math.ceil(s / aspect) <= num_crops)
    long_crops = scale  # the long side becomes scale * 336 px
    short_crops = math.ceil(int(scale * 336 / aspect) / 336)
    rows = long_crops if height > width else short_crops
    crops = long_crops * short_crops
    # 144 tokens a crop and for the global view, a newline token ending every 12-token row
    # (rows*12 rows of crops, 12 of the global view), one separator between them.
    return crops * 144 + rows * 12 + 1 + 144 + 12


def test_checkpoint_has_official_weight_names(model_dir: Path) -> None:
    from safetensors import safe_open

    with safe_open(str(model_dir / "Phi-3.5-vision-instruct" / "model.safetensors"), "pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    clip = "model.vision_embed_tokens.img_processor.vision_model."
    layer = clip + "encoder.layers.#."
    expected = {
        "lm_head.weight", "model.embed_tokens.weight", "model.norm.weight",
        *(f"model.layers.#.{n}.weight" for n in (
            "self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj",
            "input_layernorm", "post_attention_layernorm")),
        "model.vision_embed_tokens.glb_GN", "model.vision_embed_tokens.sub_GN",
        *(f"model.vision_embed_tokens.img_projection.{i}.{p}" for i in (0, 2)
          for p in ("weight", "bias")),
        clip + "embeddings.class_embedding", clip + "embeddings.patch_embedding.weight",
        clip + "embeddings.position_embedding.weight",
        *(clip + f"{n}.{p}" for n in ("pre_layrnorm", "post_layernorm")
          for p in ("weight", "bias")),
        *(layer + f"{n}.{p}" for n in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                        "self_attn.out_proj", "layer_norm1", "layer_norm2",
                                        "mlp.fc1", "mlp.fc2") for p in ("weight", "bias")),
    }
    assert {re.sub(r"layers\.\d+\.", "layers.#.", k) for k in shapes} == expected
    assert shapes["model.vision_embed_tokens.glb_GN"] == (1, 1, 4 * 32)
    assert shapes["model.vision_embed_tokens.sub_GN"] == (1, 1, 1, 4 * 32)
    assert shapes["model.vision_embed_tokens.img_projection.0.weight"] == (64, 4 * 32)
    assert shapes[clip + "embeddings.position_embedding.weight"] == (24 * 24 + 1, 32)


@pytest.mark.parametrize("num_crops", [1, 4, 16])
def test_hd_transform_token_counts(num_crops: int) -> None:
    sizes = [(640, 360), (360, 640), (336, 336), (1000, 250), (100, 1000), (50, 30)]
    processor = Phi3VProcessor(build_tiny_tokenizer(), Phi3VImageProcessor(num_crops))
    images = [Image.new("RGB", (w, h), (40, 90, 200)) for w, h in sizes]
    out = processor.image_processor(images)
    assert out["pixel_values"].shape == (len(sizes), num_crops + 1, 3, 336, 336)
    for (w, h), (ph, pw), tokens, pixels in zip(sizes, out["image_sizes"].tolist(),
                                                  out["num_img_tokens"], out["pixel_values"],
                                                  strict=True):
        assert tokens == _expected_tokens(w, h, num_crops), (w, h)
        assert (pw, ph) == hd_size(w, h, num_crops) and ph % 336 == 0 and pw % 336 == 0
        assert (ph // 336) * (pw // 336) <= num_crops
        used = 1 + (ph // 336) * (pw // 336)
        assert not pixels[used:].any() and pixels[:used].abs().sum(dim=(1, 2, 3)).min() > 0
    # Hand-checked anchors: a 16:9 frame at 4 crops is 2x2 crops; a square at 16 is 4x4.
    assert _expected_tokens(1920, 1080, 4) == 757 and _expected_tokens(500, 500, 16) == 2509


def test_prompt_expands_image_tags_and_pads_left() -> None:
    processor = Phi3VProcessor(build_tiny_tokenizer(), Phi3VImageProcessor(4))
    images = [Image.new("RGB", (w, h), (40, 90, 200)) for w, h in [(640, 360), (360, 640)]]
    counts = processor.image_processor(images)["num_img_tokens"]
    # In a prompt each tag expands to its image's count; every text piece starts with BOS.
    batch = processor([chat_prompt("Hi", 2), chat_prompt("A longer prompt here", 1)],
                      [images[:2], images[1:]])
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert (ids[0] == -1).sum() == counts[0] and (ids[0] == -2).sum() == counts[1]
    assert (ids[1] == -1).sum() == counts[1] and not (ids[1] == -2).any()
    assert batch["pixel_values"].shape[0] == 3
    assert batch["image_sizes"].tolist() == [[672, 672], [672, 672], [672, 672]]
    assert (ids[0] == 1).sum() == 3 and (ids[1] == 1).sum() == 2  # BOS per piece
    pad = int((mask[1] == 0).sum())
    assert pad > 0 and not mask[1, :pad].any() and mask[1, pad:].all()  # left padding
    assert (ids[1, :pad] == processor.pad_token_id).all()


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_kv_cache_matches_full_recompute(model_dir: Path, frames: list[str], dtype: str) -> None:
    cap = _captioner(model_dir, dtype=dtype, grounding=True)
    cap.load()
    model = cap.model
    assert model.dtype == getattr(torch, dtype)
    assert model.config.rope_parameters["rope_type"] == "longrope"  # official "su" mapped
    requests = [CaptionRequest(0, (frames[0],)),
                CaptionRequest(1, (frames[2],), context="Speech: hello there, how are you?")]
    inputs = _inputs(cap, requests)
    assert (inputs["attention_mask"] == 0).any()  # the batch is left-padded
    runs = {}
    for use_cache in (True, False):
        runs[use_cache] = model.generate(
            **inputs, max_new_tokens=3, min_new_tokens=3, do_sample=False, use_cache=use_cache,
            pad_token_id=cap.processor.pad_token_id, output_logits=True,
            return_dict_in_generate=True)
    assert torch.equal(runs[True].sequences, runs[False].sequences)
    cached = torch.stack(runs[True].logits).float()
    full = torch.stack(runs[False].logits).float()
    # float32: same arithmetic up to summation order; bfloat16: within a few bf16 ulps.
    tolerance = 1e-4 if dtype == "float32" else 4 * 2**-8 * float(full.abs().max())
    assert float((cached - full).abs().max()) <= tolerance
    assert float(cached.std()) > 0.01  # real, varied logits, not a constant


def test_batched_captions_equal_one_at_a_time(model_dir: Path, frames: list[str]) -> None:
    requests = [CaptionRequest(0, (frames[0], frames[1])),
                CaptionRequest(1, (frames[2],)),
                CaptionRequest(2, (frames[1],), context="Objects: person (2). Sounds: music.")]
    batched = _captioner(model_dir, batch_size=3, min_new_tokens=4, grounding=True)
    single = _captioner(model_dir, batch_size=1, min_new_tokens=4, grounding=True)
    together = dict(batched.caption(requests, NullProgress()))
    alone = dict(single.caption(requests, NullProgress()))
    assert together == alone
    assert sorted(together) == [0, 1, 2]
    assert all(c.new_tokens == 4 and c.error is None for c in together.values())
    assert len({c.text for c in together.values()}) == 3  # each scene's images steer its caption
    # Next-token logits of the left-padded batch equal each scene's own, far more tightly than
    # scenes differ from each other: images land in their own rows, padding is masked out.
    with torch.inference_mode():
        rows = batched.model(**_inputs(batched, requests[1:])).logits[:, -1]
        own = torch.cat([batched.model(**_inputs(batched, [r])).logits[:, -1]
                         for r in requests[1:]])
    assert float((rows - own).abs().max()) < 1e-3
    assert float((own[0] - own[1]).abs().max()) > 0.1


def test_embedding_stored_under_image_module_loads(model_dir: Path, tmp_path: Path) -> None:
    """Checkpoints may keep the shared embedding only as ``vision_embed_tokens.wte``."""
    import shutil

    from safetensors.torch import load_file, save_file

    source = model_dir / "Phi-3.5-vision-instruct"
    target = tmp_path / "Phi-3.5-vision-instruct"
    shutil.copytree(source, target)
    weights = load_file(str(source / "model.safetensors"))
    weights["model.vision_embed_tokens.wte.weight"] = weights.pop("model.embed_tokens.weight")
    save_file(weights, str(target / "model.safetensors"), metadata={"format": "pt"})
    cap = _captioner(tmp_path)
    cap.load()
    loaded = cap.model.model.embed_tokens.weight
    assert torch.equal(loaded, weights["model.vision_embed_tokens.wte.weight"])


def test_image_features_follow_official_layout(model_dir: Path) -> None:
    """Features equal a token-by-token restatement of the official HD layout: the full CLIP
    tower's hidden_states[-2] without CLS, 2x2 patches concatenated, crops row-major with
    sub_GN ending each row, then glb_GN, then the global view laid out alike."""
    from scenescribe.captions.phi3v_model import Phi3VForCausalLM

    model = Phi3VForCausalLM.from_pretrained(model_dir / "Phi-3.5-vision-instruct").eval()
    embedder = model.model.vision_embed_tokens
    images = [Image.fromarray(np.random.default_rng(3).integers(0, 255, (h, w, 3), np.uint8))
              for w, h in [(400, 220), (120, 300)]]
    vision = Phi3VImageProcessor(4)(images)
    pixels, sizes = vision["pixel_values"], vision["image_sizes"]
    with torch.inference_mode():
        ours = embedder(pixels, sizes)
        tower = embedder.img_processor.vision_model(pixels.flatten(0, 1), output_hidden_states=True)
        feats = tower.hidden_states[-2][:, 1:].reshape(*pixels.shape[:2], 24, 24, -1)
        tokens = []
        for i, (h, w) in enumerate(sizes.tolist()):
            views = [(feats[i, 1:], h // 336, w // 336), (feats[i, :1], 1, 1)]
            for n, (crops, rows, cols) in enumerate(views):
                if n == 1:
                    tokens.append(embedder.glb_GN.reshape(-1))
                for y in range(12 * rows):
                    for x in range(12 * cols):
                        crop = crops[(y // 12) * cols + x // 12]
                        cy, cx = 2 * (y % 12), 2 * (x % 12)
                        tokens.append(torch.cat([crop[cy + dy, cx + dx]
                                                 for dy in (0, 1) for dx in (0, 1)]))
                    tokens.append(embedder.sub_GN.reshape(-1))
        expected = embedder.img_projection(torch.stack(tokens))
    assert ours.shape == expected.shape == (sum(vision["num_img_tokens"]), 64)
    assert torch.allclose(ours, expected, atol=1e-5)

