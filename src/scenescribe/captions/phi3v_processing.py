"""Phi-3.5-Vision inputs: the official HD image transform, prompt building and tokenization.

Reproduces ``image_processing_phi3_v.py`` / ``processing_phi3_v.py`` of the official checkpoint:

- each image is turned landscape, resized (PIL bilinear) to ``scale * 336`` wide, where ``scale``
  is the largest with ``scale * ceil(scale / aspect) <= num_crops``, padded white (top and bottom,
  centred) to a multiple of 336, turned back, normalised with the CLIP mean and std and cut into
  336x336 crops, preceded by a bicubic 336x336 global view and zero-padded to
  ``num_crops + 1`` crops;
- a prompt is split at its ``<|image_N|>`` tags, each piece tokenized on its own (so the
  tokenizer's BOS starts every piece, as in the official processor) and tag N replaced by
  ``(rows*cols + 1) * 144 + 1 + (rows + 1) * 12`` placeholders of id ``-N`` (the official
  convention: the model embeds images there; a generated token is never negative);
- prompts of a batch are left-padded.

Pure size arithmetic needs no torch; tensors are built inside methods.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CROP = 336
MERGED_SIDE = 12  # 336 px / 14 px patches / 2x2 merge
IMAGE_TAG = re.compile(r"<\|image_(\d+)\|>")
PREPROCESSOR_FILE = "preprocessor_config.json"


def _landscape_dims(long_side: int, short_side: int, num_crops: int,
                    crop: int) -> tuple[int, int, int]:
    """Resized long side, resized short side and padded short side of a landscape image."""
    ratio = long_side / short_side
    scale = 1
    while scale * math.ceil(scale / ratio) <= num_crops:
        scale += 1
    scale -= 1
    new_long = int(scale * crop)
    new_short = max(1, int(new_long / ratio))  # the official code would pad a 0-px image to 0
    return new_long, new_short, math.ceil(new_short / crop) * crop


def hd_size(width: int, height: int, num_crops: int, crop: int = CROP) -> tuple[int, int]:
    """``(width, height)`` of an image after the HD transform: resized and padded to crops."""
    if width >= height:
        new_long, _, padded = _landscape_dims(width, height, num_crops, crop)
        return new_long, padded
    new_long, _, padded = _landscape_dims(height, width, num_crops, crop)
    return padded, new_long


def num_image_tokens(height: int, width: int, crop: int = CROP, side: int = MERGED_SIDE) -> int:
    """Placeholders for an image whose HD size is ``height x width`` (multiples of ``crop``)."""
    rows, cols = height // crop, width // crop
    return (rows * cols + 1) * side * side + 1 + (rows + 1) * side


@dataclass(frozen=True)
class Phi3VImageProcessor:
    """The HD transform with ``num_crops`` crops at most (4 for frames, the official advice)."""

    num_crops: int = 4
    image_mean: tuple[float, ...] = CLIP_MEAN
    image_std: tuple[float, ...] = CLIP_STD
    crop_size: int = CROP

    @classmethod
    def from_pretrained(cls, folder: Path, num_crops: int | None = None) -> Phi3VImageProcessor:
        """Read ``preprocessor_config.json``; ``num_crops`` overrides the file's value."""
        path = Path(folder) / PREPROCESSOR_FILE
        data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
        return cls(num_crops=int(num_crops or data.get("num_crops", 4)),
                   image_mean=tuple(data.get("image_mean", CLIP_MEAN)),
                   image_std=tuple(data.get("image_std", CLIP_STD)))

    def save_pretrained(self, folder: Path) -> None:
        """Write ``preprocessor_config.json`` with the official file's keys."""
        data = {"do_convert_rgb": True, "image_mean": list(self.image_mean),
                "image_processor_type": "Phi3VImageProcessor", "image_std": list(self.image_std),
                "num_crops": self.num_crops, "num_img_tokens": MERGED_SIDE * MERGED_SIDE,
                "processor_class": "Phi3VProcessor"}
        (Path(folder) / PREPROCESSOR_FILE).write_text(json.dumps(data, indent=2) + "\n")

    def hd_image(self, image: Image.Image) -> Image.Image:
        """Resize and pad one RGB image to whole crops.

        Portrait images are transposed, handled as landscape and transposed back, exactly as
        the official code does (PIL's two-pass resize is not symmetric to the last bit).
        """
        image = image.convert("RGB")
        portrait = image.width < image.height
        if portrait:
            image = image.transpose(Image.Transpose.TRANSPOSE)
        new_w, new_h, pad_h = _landscape_dims(image.width, image.height, self.num_crops,
                                              self.crop_size)
        canvas = Image.new("RGB", (new_w, pad_h), (255, 255, 255))
        # White padding above and below, centred and rounded down at the top, as official.
        canvas.paste(image.resize((new_w, new_h), Image.Resampling.BILINEAR),
                     (0, (pad_h - new_h) // 2))
        return canvas.transpose(Image.Transpose.TRANSPOSE) if portrait else canvas

    def __call__(self, images: Sequence[Image.Image]) -> dict[str, Any]:
        """``pixel_values (N, num_crops+1, 3, S, S)``, ``image_sizes (N, 2)`` as (h, w), and
        ``num_img_tokens`` per image."""
        import numpy as np
        import torch

        s = self.crop_size
        mean = torch.tensor(self.image_mean).view(3, 1, 1)
        std = torch.tensor(self.image_std).view(3, 1, 1)
        pixel_values, sizes = [], []
        for image in images:
            hd = torch.from_numpy(np.asarray(self.hd_image(image), dtype=np.uint8).copy())
            hd = (hd.permute(2, 0, 1).float() / 255.0 - mean) / std
            h, w = hd.shape[1:]
            glb = torch.nn.functional.interpolate(hd[None], size=(s, s), mode="bicubic")
            crops = (hd.reshape(3, h // s, s, w // s, s).permute(1, 3, 0, 2, 4)
                     .reshape(-1, 3, s, s))
            stack = torch.zeros(self.num_crops + 1, 3, s, s)
            stack[0], stack[1: 1 + crops.shape[0]] = glb[0], crops
            pixel_values.append(stack)
            sizes.append((h, w))
        return {"pixel_values": torch.stack(pixel_values),
                "image_sizes": torch.tensor(sizes, dtype=torch.long),
                "num_img_tokens": [num_image_tokens(h, w, s) for h, w in sizes]}


def chat_prompt(text: str, num_images: int) -> str:
    """The official chat format with one ``<|image_N|>`` line per image before the text."""
    tags = "".join(f"<|image_{i}|>\n" for i in range(1, num_images + 1))
    return f"<|user|>\n{tags}{text}<|end|>\n<|assistant|>\n"


class Phi3VProcessor:
    """Prompts and images to model inputs; batches are left-padded."""

    def __init__(self, tokenizer: Any, image_processor: Phi3VImageProcessor,
                 pad_token_id: int | None = None) -> None:
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        pad = pad_token_id if tokenizer.pad_token_id is None else tokenizer.pad_token_id
        self.pad_token_id = 0 if pad is None else int(pad)

    def token_ids(self, text: str, num_img_tokens: Sequence[int]) -> list[int]:
        """Tokenize ``text`` piecewise around its image tags and expand the tags."""
        tags = [int(m) for m in IMAGE_TAG.findall(text)]
        if tags != list(range(1, len(num_img_tokens) + 1)):
            raise ValueError(f"prompt image tags {tags} must be <|image_1|>.."
                             f"<|image_{len(num_img_tokens)}|> in order, once each")
        pieces = IMAGE_TAG.split(text)[::2]  # split() also returns the captured numbers
        ids = list(self.tokenizer(pieces[0])["input_ids"])
        for tag, (count, piece) in enumerate(zip(num_img_tokens, pieces[1:], strict=True), 1):
            ids += [-tag] * count
            ids += list(self.tokenizer(piece)["input_ids"])
        return ids

    def __call__(self, texts: Sequence[str],
                 images: Sequence[Sequence[Image.Image]]) -> dict[str, Any]:
        """Batch of prompts (each with its own images) -> padded tensors for ``generate``."""
        import torch

        flat = [im for group in images for im in group]
        vision = self.image_processor(flat) if flat else None
        counts = vision["num_img_tokens"] if vision else []
        rows, start = [], 0
        for text, group in zip(texts, images, strict=True):
            rows.append(self.token_ids(text, counts[start: start + len(group)]))
            start += len(group)
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            input_ids[i, width - len(row):] = torch.tensor(row, dtype=torch.long)
            attention_mask[i, width - len(row):] = 1
        out: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
        if vision:
            out["pixel_values"] = vision["pixel_values"]
            out["image_sizes"] = vision["image_sizes"]
        return out
