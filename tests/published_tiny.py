"""Tiny random-weight checkpoints laid out as the published ones, from tests/fixtures/published.

A folder gets the checkpoint's published small files as they are (configs, processor and
tokenizer configs, chat template, generation config), a ``config.json`` that keeps every published
id and vocabulary size but shrinks the network, random weights, and a ``tokenizer.json`` built here
(the published ones are not available offline, and Qwen's is 7 MB): every special token at its
published id, in the pipeline style of the family (SentencePiece-style Llama BPE with the legacy
``Prepend("▁")`` normalizer, or byte-level BPE).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from scenescribe import registry
from scenescribe.testing.code_tokenizers import code_tokenizer

FIXTURES = Path(__file__).parent / "fixtures" / "published"
FOLDERS = {"llava-v1.6-vicuna-7b": "llava-hf--llava-v1.6-vicuna-7b-hf",
           "llava-v1.6-mistral-7b": "llava-hf--llava-v1.6-mistral-7b-hf",
           "instructblip-vicuna-7b": "Salesforce--instructblip-vicuna-7b",
           "qwen2.5-vl-7b": "Qwen--Qwen2.5-VL-7B-Instruct",
           "smolvlm2": "HuggingFaceTB--SmolVLM2-500M-Video-Instruct",
           "phi-3.5-vision": "microsoft--Phi-3.5-vision-instruct"}
TEXT = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "initializer_range": 0.2}
VISION = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
          "num_attention_heads": 2, "initializer_range": 0.2}
LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,:;'\"!?()-/_[]<>|"


def published(name: str, file: str) -> Any:
    return json.loads((FIXTURES / FOLDERS[name] / file).read_text())


def llama_tokenizer(base: int, added: dict[int, str | tuple[str, bool]], bos: str, *,
                    legacy: bool = True) -> Any:
    """A Llama-layout SentencePiece BPE: <unk> <s> </s>, 256 byte tokens, pieces, fillers.

    ``legacy`` gives the normalizer of legacy Llama ``tokenizer.json`` files (a ``▁`` before every
    text segment, so also after special tokens); otherwise a Metaspace pre-tokenizer that
    prepends only at the start, as non-legacy conversions write.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    vocab.update({f"<0x{b:02X}>": 3 + b for b in range(256)})
    for piece in ["▁", *LETTERS, *(f"▁{c}" for c in LETTERS)]:
        vocab.setdefault(piece, len(vocab))
    for i in range(len(vocab), base):
        vocab[f"▁zq{i}"] = i
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", fuse_unk=True,
                               byte_fallback=True))
    if legacy:
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"),
                                               normalizers.Replace(" ", "▁")])
    else:
        tok.normalizer = normalizers.Replace(" ", "▁")
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first",
                                                     split=False)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, vocab[bos])])
    for i in sorted(added):
        content, rstrip = (added[i], False) if isinstance(added[i], str) else added[i]
        assert tok.get_vocab_size() == i, f"added token {content} would not land at {i}"
        tok.add_special_tokens([AddedToken(content, normalized=False, special=True,
                                           rstrip=rstrip)])
    return tok


def byte_level_tokenizer(vocab_size: int, specials: dict[str, int]) -> Any:
    """Byte-level BPE (GPT-2 / Qwen style) with ``specials`` at their ids."""
    return code_tokenizer(vocab_size, specials).backend_tokenizer


def tokenizer_for(name: str, *, legacy: bool = True) -> Any:
    if name.startswith("llava"):
        return llama_tokenizer(32000, {32000: "<image>", 32001: "<pad>"}, "<s>", legacy=legacy)
    if name == "instructblip-vicuna-7b":
        return llama_tokenizer(32000, {32000: "[PAD]", 32001: "<image>"}, "</s>", legacy=legacy)
    added = published(name, "tokenizer_config.json").get("added_tokens_decoder", {})
    if name == "phi-3.5-vision":  # as published: the chat tokens strip the whitespace after them
        chat = {int(k): (v["content"], v["rstrip"]) for k, v in added.items() if int(k) >= 32000}
        return llama_tokenizer(32000, chat, "<s>", legacy=legacy)
    if name == "qwen2.5-vl-7b":
        specials = {v["content"]: int(k) for k, v in added.items()}
        return byte_level_tokenizer(151643 + len(specials), specials)
    from scenescribe.testing.stand_ins import smolvlm_special_ids

    return byte_level_tokenizer(49280, smolvlm_special_ids(49280, 49190))


def tiny_config(name: str) -> Any:
    """The published config.json with the networks shrunk; ids and vocabularies kept."""
    from transformers import AutoConfig

    data = published(name, "config.json")
    data["text_config"] = {**data.get("text_config", {}), **TEXT}
    vision = {**data.get("vision_config", {}), **VISION}
    if name.startswith("llava"):
        vision.update(image_size=32, patch_size=8, projection_dim=32)
        data["image_grid_pinpoints"] = [[32, 64], [64, 32], [64, 64]]
    elif name == "instructblip-vicuna-7b":
        vision.update(image_size=32, patch_size=8)
        data["qformer_config"] = {**data["qformer_config"], **VISION, "encoder_hidden_size": 32,
                                  "cross_attention_frequency": 1, "max_position_embeddings": 512}
        data["num_query_tokens"] = 4
    elif name == "qwen2.5-vl-7b":
        data.update(TEXT)
        data["text_config"]["rope_scaling"] = {"type": "mrope", "mrope_section": [2, 3, 3]}
        vision = {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2,
                  "out_hidden_size": 64, "patch_size": 14, "spatial_merge_size": 2,
                  "temporal_patch_size": 2, "window_size": 112, "fullatt_block_indexes": [1],
                  "initializer_range": 0.2}
    elif name == "smolvlm2":
        vision.update(image_size=32, patch_size=8)
        data["scale_factor"] = 2
    data["vision_config"] = vision
    model_type = data.pop("model_type")
    return AutoConfig.for_model(model_type, **data)


def build_phi(out: Path) -> None:
    """Tiny Phi-3.5-Vision in the official layout, at the published ids and vocabulary."""
    from scenescribe.captions.phi3v_model import Phi3VConfig, Phi3VForCausalLM
    from scenescribe.testing.phi3v_tiny import tiny_config_dict

    class Ids:  # the published ids, for tiny_config_dict
        @staticmethod
        def convert_tokens_to_ids(token: str) -> int:
            return {"<s>": 1, "</s>": 2, "<|endoftext|>": 32000}[token]

    data = {**tiny_config_dict(Ids()), "vocab_size": published("phi-3.5-vision",
                                                                 "config.json")["vocab_size"]}
    Phi3VForCausalLM(Phi3VConfig(**data)).save_pretrained(out)
    (out / "config.json").write_text(json.dumps(data, indent=2))


def build(name: str, out: Path, *, legacy_tokenizer: bool = True, seed: int = 0) -> Path:
    """A folder loadable with ``from_pretrained`` exactly like a download of ``name``."""
    import torch

    out.mkdir(parents=True, exist_ok=True)
    if name == "phi-3.5-vision":
        torch.manual_seed(seed)
        build_phi(out)
        for file in (FIXTURES / FOLDERS[name]).iterdir():
            if file.name != "config.json":
                shutil.copy(file, out / file.name)
        tokenizer_for(name, legacy=legacy_tokenizer).save(str(out / "tokenizer.json"))
        return out
    cls = registry.get_entry(name, "captioner").load_class()
    torch.manual_seed(seed)
    model = cls.transformers_class()._from_config(tiny_config(name), dtype=torch.float32)
    model.save_pretrained(out)
    for file in (FIXTURES / FOLDERS[name]).iterdir():
        if file.name != "config.json":  # the tiny network's config stays
            shutil.copy(file, out / file.name)
    tokenizer_for(name, legacy=legacy_tokenizer).save(str(out / "tokenizer.json"))
    if name == "instructblip-vicuna-7b":
        qformer_tokenizer(out / "qformer_tokenizer")
    if name.startswith("llava"):  # the published processor's sizes, scaled to the tiny tower
        pre = json.loads((out / "preprocessor_config.json").read_text())
        pre.update(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                   image_grid_pinpoints=[[32, 64], [64, 32], [64, 64]])
        (out / "preprocessor_config.json").write_text(json.dumps(pre))
        proc = json.loads((out / "processor_config.json").read_text())
        proc["patch_size"] = 8
        (out / "processor_config.json").write_text(json.dumps(proc))
    if name == "instructblip-vicuna-7b":
        pre = json.loads((out / "preprocessor_config.json").read_text())
        pre["size"] = {"height": 32, "width": 32}
        (out / "preprocessor_config.json").write_text(json.dumps(pre))
        proc = json.loads((out / "processor_config.json").read_text())
        proc["num_query_tokens"] = 4
        (out / "processor_config.json").write_text(json.dumps(proc))
    if name == "smolvlm2":
        pre = json.loads((out / "preprocessor_config.json").read_text())
        pre.update(max_image_size={"longest_edge": 32}, size={"longest_edge": 128})
        (out / "preprocessor_config.json").write_text(json.dumps(pre))
        proc = json.loads((out / "processor_config.json").read_text())
        proc["image_seq_len"] = 4
        (out / "processor_config.json").write_text(json.dumps(proc))
    return out


def qformer_tokenizer(folder: Path) -> None:
    """A BERT-style WordPiece tokenizer in the ``qformer_tokenizer`` subfolder."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
                                          *LETTERS.lower(), *(f"##{c}" for c in LETTERS.lower())])}
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                            cls_token="[CLS]", sep_token="[SEP]",
                            mask_token="[MASK]").save_pretrained(folder)
