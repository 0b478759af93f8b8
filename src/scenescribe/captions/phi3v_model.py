"""Phi-3.5-Vision built natively on transformers' Phi-3 and CLIP classes.

The official checkpoint (``microsoft/Phi-3.5-vision-instruct``) ships remote code written for
transformers 4.x whose KV cache fails under transformers 5. This module rebuilds the same network
from library classes so that it loads the official weight names unchanged
(``model.embed_tokens``, ``model.layers.*``, ``model.vision_embed_tokens.img_processor.*``,
``model.vision_embed_tokens.img_projection.{0,2}.*``, ``glb_GN``, ``sub_GN``, ``lm_head``) and
generates through ``GenerationMixin.generate`` with the standard ``DynamicCache``.

Image features are computed on the prefill step only: a CLIP ViT-L/14-336 encodes every crop,
the penultimate layer's patch features are merged 2x2 into 4x channels, laid out as the HD
transform ("sub_glb": crops, ``glb_GN``, global view, each row ended by ``sub_GN``) and projected
by a two-layer MLP into the language model's embedding space at the image placeholder positions.

Imported lazily (by the Phi-3.5-Vision captioner only): it needs torch and transformers.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel, GenerationMixin, Phi3Config
from transformers import initialization as init
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.models.phi3.modeling_phi3 import Phi3Model, Phi3PreTrainedModel

# CLIP ViT-L/14 at 336 px: the vision tower the official config names by hub id only.
CLIP_VIT_L14_336 = {
    "hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16,
    "num_hidden_layers": 24, "image_size": 336, "patch_size": 14, "projection_dim": 768,
    "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5,
}
# The only embedding layout Phi-3.5-Vision uses; others are refused rather than guessed.
SUPPORTED_EMBD_LAYER = {"embedding_cls": "image", "hd_transform_order": "sub_glb",
                        "projection_cls": "mlp", "use_hd_transform": True,
                        "with_learnable_separator": True}


@strict
class Phi3VConfig(Phi3Config):
    """Phi-3 text config plus the vision settings of the official ``phi3_v`` config.json.

    ``img_processor`` and ``embd_layer`` are read as the official file writes them;
    ``vision_config`` (absent from the official file) defaults to CLIP ViT-L/14-336.
    """

    model_type = "phi3_v"
    # The plain mapping (not transformers 5.2x's SubConfigSpec) works across 5.x releases; the
    # dict -> config conversion is done in __post_init__.
    sub_configs: ClassVar[dict[str, type]] = {"vision_config": CLIPVisionConfig}

    vision_config: dict | CLIPVisionConfig | None = None
    img_processor: dict | None = None
    embd_layer: dict | None = None

    def __post_init__(self, **kwargs: Any) -> None:
        if self.vision_config is None:
            self.vision_config = CLIPVisionConfig(**CLIP_VIT_L14_336)
        elif isinstance(self.vision_config, dict):
            self.vision_config = CLIPVisionConfig(**{k: v for k, v in self.vision_config.items()
                                                      if k != "model_type"})
        super().__post_init__(**kwargs)
        # The official 262144-token window exceeds max_position_embeddings (131072), so it can
        # never bind; without it the plain causal mask is used (same result, simpler path).
        if self.sliding_window is not None and self.sliding_window >= self.max_position_embeddings:
            self.sliding_window = None

    def convert_rope_params_to_dict(self, default_theta: int | float = 10_000.0,
                                    ignore_keys: set | None = None, **kwargs: Any) -> Any:
        # The official file says rope_scaling {"type": "su"}; Phi3Config renames it to longrope
        # only after deciding which keys longrope needs, so rename it first.
        scaling = kwargs.get("rope_scaling")
        if isinstance(scaling, dict) and scaling.get("type", scaling.get("rope_type")) == "su":
            scaling = {k: v for k, v in scaling.items() if k != "type"}
            kwargs["rope_scaling"] = {**scaling, "rope_type": "longrope"}
        return super().convert_rope_params_to_dict(default_theta, ignore_keys, **kwargs)


class _VisionTower(nn.Module):
    """Holds the CLIP tower at the official path ``img_processor.vision_model``.

    transformers 5's ``CLIPVisionModel`` no longer has a ``vision_model`` level (it renames
    keys on load); nesting it here keeps the official names without any renaming.
    """

    def __init__(self, config: CLIPVisionConfig) -> None:
        super().__init__()
        self.vision_model = CLIPVisionModel(config)


class Phi3VImageEmbedding(nn.Module):
    """CLIP crops -> 2x2-merged patch grid with separators -> MLP into text embedding space."""

    def __init__(self, config: Phi3VConfig) -> None:
        super().__init__()
        layout = {**SUPPORTED_EMBD_LAYER, **(config.embd_layer or {})}
        if layout != SUPPORTED_EMBD_LAYER:
            raise ValueError(f"unsupported Phi-3-V embedding layout {config.embd_layer}; "
                             f"only {SUPPORTED_EMBD_LAYER} is implemented")
        vision = config.vision_config
        settings = config.img_processor or {}
        dim = int(settings.get("image_dim_out", vision.hidden_size))
        if dim != vision.hidden_size or settings.get("type_feature", "patch") != "patch":
            raise ValueError(f"img_processor {settings} does not match the vision tower")
        self.grid = vision.image_size // vision.patch_size  # 24 patches a side
        if self.grid % 2:
            raise ValueError(f"patch grid {self.grid} must be even for the 2x2 merge")
        self.layer_idx = int(settings.get("layer_idx", -2))
        self.img_processor = _VisionTower(vision)
        self.glb_GN = nn.Parameter(torch.zeros(1, 1, 4 * dim))
        self.sub_GN = nn.Parameter(torch.zeros(1, 1, 1, 4 * dim))
        self.img_projection = nn.Sequential(
            nn.Linear(4 * dim, config.hidden_size), nn.GELU(),
            nn.Linear(config.hidden_size, config.hidden_size))

    def patch_features(self, crops: torch.Tensor) -> torch.Tensor:
        """``(n, 3, S, S)`` crops -> ``(n, grid*grid, C)`` patch features of layer ``layer_idx``.

        Runs only the layers that feed the chosen hidden state (23 of 24 for -2), which is
        what ``hidden_states[layer_idx]`` of the full tower would return.
        """
        tower = self.img_processor.vision_model
        crops = crops.to(tower.embeddings.patch_embedding.weight.dtype)
        hidden = tower.pre_layrnorm(tower.embeddings(crops))
        depth = self.layer_idx % (len(tower.encoder.layers) + 1)
        for layer in tower.encoder.layers[:depth]:
            hidden = layer(hidden, None)
        return hidden[:, 1:]  # drop CLS: the "patch" feature type

    def _merge_2x2(self, feats: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
        """``(rows*cols, grid*grid, C)`` crop features -> ``(rows*h, cols*h, 4C)`` with h=grid/2."""
        n, _, c = feats.shape
        h = self.grid // 2
        # Patch (2y+dy, 2x+dx) -> cell (y, x), channels ordered (dy, dx, c); then the crops,
        # listed row-major, are laid side by side into one grid.
        merged = (feats.reshape(n, h, 2, h, 2, c).permute(0, 1, 3, 2, 4, 5)
                  .reshape(rows, cols, h, h, 4 * c).permute(0, 2, 1, 3, 4))
        return merged.reshape(rows * h, cols * h, 4 * c)

    def _with_newlines(self, grid: torch.Tensor) -> torch.Tensor:
        """Append ``sub_GN`` to every row of a ``(H, W, D)`` grid and flatten to tokens."""
        newline = self.sub_GN[0].expand(grid.shape[0], 1, -1).to(grid.dtype)
        return torch.cat([grid, newline], dim=1).reshape(-1, grid.shape[-1])

    def forward(self, pixel_values: torch.Tensor, image_sizes: torch.Tensor) -> torch.Tensor:
        """``pixel_values (N, 1+max_crops, 3, S, S)`` and padded ``image_sizes (N, 2)`` (h, w)
        -> ``(tokens of all images, hidden)`` in image order.

        Padding crops (beyond ``h//S * w//S``) are skipped rather than encoded and dropped.
        """
        size = pixel_values.shape[-1]
        shapes = [(int(h) // size, int(w) // size) for h, w in image_sizes.tolist()]
        used = [pixel_values[i, : 1 + r * c] for i, (r, c) in enumerate(shapes)]
        feats = self.patch_features(torch.cat(used, dim=0))
        pieces, start = [], 0
        for rows, cols in shapes:
            glb, sub = feats[start], feats[start + 1: start + 1 + rows * cols]
            start += 1 + rows * cols
            pieces += [self._with_newlines(self._merge_2x2(sub, rows, cols)),
                       self.glb_GN[0].to(feats.dtype),
                       self._with_newlines(self._merge_2x2(glb[None], 1, 1))]
        proj = self.img_projection[0]
        return self.img_projection(torch.cat(pieces, dim=0).to(proj.weight.dtype))


def _init_vision_extras(module: nn.Module, std: float) -> None:
    if isinstance(module, Phi3VImageEmbedding):
        init.normal_(module.glb_GN, mean=0.0, std=std)
        init.normal_(module.sub_GN, mean=0.0, std=std)



class Phi3VModel(Phi3Model):
    """``Phi3Model`` plus ``vision_embed_tokens``: the official ``model.*`` namespace."""

    config: Phi3VConfig

    def __init__(self, config: Phi3VConfig) -> None:
        super().__init__(config)
        self.vision_embed_tokens = Phi3VImageEmbedding(config)
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        _init_vision_extras(module, self.config.initializer_range)

    def embed(self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None,
              image_sizes: torch.Tensor | None) -> torch.Tensor:
        """Token embeddings with image features written at the placeholder positions.

        Placeholders are negative ids (``-N`` for image N), the official processor's convention:
        no generated token can ever be mistaken for one.
        """
        is_image = input_ids < 0
        embeds = self.embed_tokens(input_ids.masked_fill(is_image, 0))
        if pixel_values is None or not bool(is_image.any()):
            return embeds
        if image_sizes is None:
            raise ValueError("pixel_values need image_sizes")
        feats = self.vision_embed_tokens(pixel_values.to(embeds.device), image_sizes)
        if feats.shape[0] != int(is_image.sum()):
            raise ValueError(f"{int(is_image.sum())} image placeholders in input_ids but the "
                             f"images give {feats.shape[0]} features")
        # Row-major order of the mask is the order images were listed, as in the official code.
        return embeds.masked_scatter(is_image[..., None], feats.to(embeds.dtype))


class Phi3VForCausalLM(Phi3PreTrainedModel, GenerationMixin):
    """Phi-3.5-Vision for generation: ``model`` (Phi3VModel) and ``lm_head``."""

    config: Phi3VConfig
    config_class = Phi3VConfig
    _tied_weights_keys: ClassVar[dict[str, str]] = {}  # the official head is not tied
    # Checkpoints may also store the shared embedding under the image module, and CLIP's ids.
    _keys_to_ignore_on_load_unexpected: ClassVar[list[str]] = [r"vision_embed_tokens\.wte\.",
                                                                r"position_ids"]

    def __init__(self, config: Phi3VConfig) -> None:
        super().__init__(config)
        self.model = Phi3VModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        _init_vision_extras(module, self.config.initializer_range)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_sizes: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Any = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        """Embed text (and images, when ``pixel_values`` are given), then run ``Phi3Model``."""
        if inputs_embeds is None:
            if input_ids is None:
                raise ValueError("give input_ids or inputs_embeds")
            inputs_embeds = self.model.embed(input_ids, pixel_values, image_sizes)
        out = self.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                         position_ids=position_ids, past_key_values=past_key_values,
                         use_cache=use_cache, **kwargs)
        hidden = out.last_hidden_state
        if isinstance(logits_to_keep, int):
            hidden = hidden[:, -logits_to_keep:] if logits_to_keep else hidden
        else:
            hidden = hidden[:, logits_to_keep]
        return CausalLMOutputWithPast(logits=self.lm_head(hidden),
                                      past_key_values=out.past_key_values,
                                      hidden_states=out.hidden_states, attentions=out.attentions)

    def prepare_inputs_for_generation(
        self, input_ids: torch.LongTensor, past_key_values: Any = None,
        pixel_values: torch.Tensor | None = None, image_sizes: torch.Tensor | None = None,
        is_first_iteration: bool | None = False, use_cache: bool = True, **kwargs: Any,
    ) -> dict[str, Any]:
        """Images go in on the prefill step only; later steps feed one token against the cache.

        Like ``Phi3ForCausalLM``: when the sequence first passes the LongRoPE switch length the
        cache (built with the short factors) is dropped and everything, images included, is
        recomputed.
        """
        limit = self.config.original_max_position_embeddings
        if (past_key_values is not None and input_ids.shape[1] >= limit + 1
                and past_key_values.get_seq_length() <= limit):
            past_key_values = None
            kwargs["next_sequence_length"] = None
            is_first_iteration = True
        inputs = super().prepare_inputs_for_generation(
            input_ids, past_key_values=past_key_values, is_first_iteration=is_first_iteration,
            use_cache=use_cache, **kwargs)
        if is_first_iteration or not use_cache:
            inputs["pixel_values"], inputs["image_sizes"] = pixel_values, image_sizes
        else:
            inputs.pop("pixel_values", None)
            inputs.pop("image_sizes", None)
        return inputs
