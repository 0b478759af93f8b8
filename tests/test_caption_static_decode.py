"""The static caption decoder gives ``generate``'s tokens: each family's tiny published-layout
checkpoint, a left-padded batch, end tokens and ``min_new_tokens``, beam search, and the padded
graph layout."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest

from scenescribe import registry
from scenescribe.captions.base import CaptionRequest
from scenescribe.captions.decode_attention import KINDS
from scenescribe.captions.static_layout import language_model
from scenescribe.options import CaptionOptions

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from published_tiny import build  # noqa: E402

GREEDY = ("llava-v1.6-mistral-7b", "llava-v1.6-vicuna-7b", "phi-3.5-vision", "smolvlm2")


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> list[CaptionRequest]:
    """Three scenes whose prompts differ in length (left padding) and in image count."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("static_frames")
    paths = []
    for i, (size, colour) in enumerate([((64, 36), (200, 40, 40)), ((48, 64), (40, 200, 90)),
                                        ((80, 60), (10, 10, 200))]):
        paths.append(str(folder / f"f{i}.jpg"))
        Image.new("RGB", size, colour).save(paths[-1])
    return [CaptionRequest(0, (paths[0], paths[1])),
            CaptionRequest(1, (paths[2],), "Speech: hello."),
            CaptionRequest(2, (paths[1], paths[2], paths[0]),
                           "Speech: a much longer grounding context that pads the others.")]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("static_ckpt")
    return {name: build(name, root / name) for name in GREEDY}


def captioner(name: str, folder: Path, decoder: str, **options: Any) -> Any:
    opts = CaptionOptions(weights=str(folder), max_new_tokens=options.pop("max_new_tokens", 10),
                          decoder=decoder, **options)
    model = registry.create(name, "captioner", options=opts, device="cpu", model_dir=None)
    model.load()
    return model


def tokens(model: Any, requests: list[CaptionRequest]) -> list[tuple[str, int]]:
    return [(c.text, c.new_tokens) for _, c in model.generate(requests)]


@pytest.mark.parametrize("attention", KINDS)
@pytest.mark.parametrize("name", GREEDY)
def test_static_decoding_gives_generates_captions(name: str, attention: str,
                                                  checkpoints: dict[str, Path],
                                                  scenes: list[CaptionRequest]) -> None:
    reference = captioner(name, checkpoints[name], "generate")
    static = captioner(name, checkpoints[name], "static")
    assert reference._static is None and static._static is not None
    static._static.attention = attention  # each kind of the step's attention
    assert static.facts()["decoder"] == "static"
    expected = tokens(reference, scenes)
    assert tokens(static, scenes) == expected
    assert static._static.in_place  # the prefill wrote straight into the buffers
    # The graph layout: rows padded to a bucket of 8, the padding rows inert.
    static._static.pad = True
    assert tokens(static, scenes) == expected
    # A later batch reuses the buffers (one scene, shorter prompt).
    assert tokens(static, scenes[:1]) == expected[:1]


@pytest.mark.parametrize("name", GREEDY[:2])
def test_end_tokens_and_min_new_tokens_stop_as_generate_does(
        name: str, checkpoints: dict[str, Path], scenes: list[CaptionRequest]) -> None:
    """An end token the model emits mid-caption: rows stop there (and only from the
    ``min_new_tokens``-th token on)."""
    probe = captioner(name, checkpoints[name], "generate")
    moved = probe._to_device(probe.prepare(scenes))
    out = probe.model.generate(**moved, generation_config=probe.generation_config())
    first_row = out[0, moved["input_ids"].shape[1]:].tolist()
    end = first_row[2]  # the third new token of scene 0 becomes an end token
    for min_new in (0, 5):
        results = []
        for decoder in ("generate", "static"):
            model = captioner(name, checkpoints[name], decoder, min_new_tokens=min_new)
            model._checkpoint_eos = [end, *model._checkpoint_eos]
            results.append(tokens(model, scenes))
        assert results[0] == results[1]
        assert results[0][0][1] == (2 if min_new == 0 else results[0][0][1])
        assert min_new == 0 or results[0][0][1] >= min_new


@pytest.fixture(scope="module")
def instructblip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build("instructblip-vicuna-7b", tmp_path_factory.mktemp("iblip") / "iblip")


@pytest.mark.parametrize(("max_new", "attention"), [(12, "sdpa"), (30, "sdpa"), (30, "matmul")])
def test_static_beam_search_gives_generates_captions(max_new: int, attention: str,
                                                     instructblip: Path,
                                                     scenes: list[CaptionRequest]) -> None:
    """InstructBLIP's five beams: each scene's prompt run once, its cache copied to the beams."""
    reference = captioner("instructblip-vicuna-7b", instructblip, "generate",
                          max_new_tokens=max_new)
    static = captioner("instructblip-vicuna-7b", instructblip, "static", max_new_tokens=max_new)
    assert static._static is not None and static.facts()["decoder"] == "static"
    static._static.attention = attention
    expected = tokens(reference, scenes)
    assert tokens(static, scenes) == expected
    static._static.pad = True  # the graph layout: padding scenes closed from the start
    assert tokens(static, scenes) == expected
    # A later, smaller batch reuses the buffers. Alone, the scene has no left padding: its
    # scores differ in the last bits from the batch's, and the beams can end elsewhere.
    assert tokens(static, scenes[1:2]) == tokens(reference, scenes[1:2])
    greedy = captioner("instructblip-vicuna-7b", instructblip, "static", max_new_tokens=max_new)
    greedy.num_beams = 1
    assert tokens(greedy, scenes) != expected  # the beams chose other captions than greedy


def test_static_beam_search_finishes_and_closes_scenes_as_generate_does(
        instructblip: Path, scenes: list[CaptionRequest],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With thousands of end tokens beams end at most steps: finished hypotheses compete by
    their mean log-probability, and a scene closes once no open beam can beat its worst
    finished one; the decoder stops when every scene has closed."""
    import random

    from scenescribe.captions import static_decode

    rng = random.Random(0)
    steps = [0]
    step = static_decode.StaticCaptionDecoder._step

    def counted(self: Any, buf: Any, pad_id: int) -> None:
        steps[0] += 1
        step(self, buf, pad_id)

    monkeypatch.setattr(static_decode.StaticCaptionDecoder, "_step", counted)
    ends = rng.sample(range(300, 32000), 8000)
    results = []
    for decoder in ("generate", "static"):
        model = captioner("instructblip-vicuna-7b", instructblip, decoder, max_new_tokens=40,
                          min_new_tokens=4)
        model.min_new_tokens_floor = 0
        model._checkpoint_eos = [*ends, *model._checkpoint_eos]
        steps[0] = 0
        results.append(tokens(model, scenes))
    assert results[0] == results[1]
    lengths = [n for _, n in results[1]]
    assert min(lengths) >= 4 and max(lengths) < 40  # ended on their own, none before the 4th
    assert steps[0] < 39  # every scene closed before the 40th token: the decoder stopped


def test_auto_takes_the_graph_decoder_on_cuda_for_greedy_and_beams() -> None:
    def decoder(name: str, choice: str, device: str = "cuda") -> str:
        return registry.create(name, "captioner", options=CaptionOptions(decoder=choice),
                               device=device, model_dir=None).decoder

    assert decoder("instructblip-vicuna-7b", "auto") == "graph"
    assert decoder("llava-v1.6-mistral-7b", "auto") == "graph"
    assert decoder("instructblip-vicuna-7b", "generate") == "generate"
    assert decoder("llava-v1.6-mistral-7b", "auto", "cpu") == "generate"
    assert decoder("llava-v1.6-mistral-7b", "graph", "cpu") == "static"


def test_other_layouts_keep_generate(tmp_path: Path) -> None:
    qwen = captioner("qwen2.5-vl-7b", build("qwen2.5-vl-7b", tmp_path / "qwen"), "static")
    assert language_model(qwen.model) is None  # 3-D rotary positions
    assert qwen._static is None and qwen.facts()["decoder"] == "generate"


def test_decoder_option_is_checked_and_not_in_the_cache_key(checkpoints: dict[str, Path]) -> None:
    from scenescribe.errors import ConfigError

    name = GREEDY[0]
    with pytest.raises(ConfigError, match="decoder"):
        CaptionOptions(decoder="fast")
    keys = {decoder: registry.create(name, "captioner", options=CaptionOptions(decoder=decoder),
                                     device="cpu", model_dir=None).cache_key()
            for decoder in ("generate", "graph")}
    assert keys["generate"] == keys["graph"]
    on_cpu = registry.create(name, "captioner", options=CaptionOptions(), device="cpu",
                             model_dir=None)
    assert on_cpu.decoder == "generate"  # auto: graphs are CUDA's
    assert registry.create(name, "captioner", options=CaptionOptions(decoder="graph"),
                           device="cpu", model_dir=None).decoder == "static"


def test_only_length_dependent_rotary_tables_limit_the_static_decoder() -> None:
    """Vicuna's prompts of two AnyRes images run past its 4,096 positions: plain RoPE computes
    those positions as ``generate`` does, so the static decoder still serves it; Phi-3.5's
    LongRoPE switches tables past 4,096, so longer sequences go to ``generate``."""
    from scenescribe.captions.static_layout import _table_limit
    from scenescribe.testing import stand_ins

    def limit(name: str) -> int | None:
        config = stand_ins.published_config(name)
        return _table_limit(getattr(config, "text_config", config))

    assert limit("llava-v1.6-vicuna-7b") is None
    assert limit("llava-v1.6-mistral-7b") is None
    assert limit("phi-3.5-vision") == 4096


def test_the_planner_counts_a_second_cache_only_where_the_prefill_keeps_its_own(
        checkpoints: dict[str, Path]) -> None:
    name = GREEDY[0]
    generate = captioner(name, checkpoints[name], "generate")
    static = captioner(name, checkpoints[name], "static")
    assert static._static.in_place  # the forward names its cache argument
    assert static.scene_bytes(100) == generate.scene_bytes(100)
    text = static.model.config.get_text_config()
    kv_heads = text.num_key_value_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    per_position = 2 * text.num_hidden_layers * kv_heads * head_dim * 4  # float32
    static._static.in_place = False  # the prefill's own cache: its 100 prompt positions
    assert static.scene_bytes(100) - generate.scene_bytes(100) == 100 * per_position


def test_the_planner_counts_a_beam_searchs_prompt_once_on_the_static_decoder(
        instructblip: Path) -> None:
    """``generate`` keeps every beam's prompt; the static decoder one per scene."""
    generate = captioner("instructblip-vicuna-7b", instructblip, "generate")
    static = captioner("instructblip-vicuna-7b", instructblip, "static")
    text = static.model.config.get_text_config()
    per_position = 2 * text.num_hidden_layers * text.num_key_value_heads * (
        text.hidden_size // text.num_attention_heads) * 4
    beams, new = static.num_beams, static.options.max_new_tokens
    saved = (beams * (100 + new) - (100 + beams * new)) * per_position
    assert generate.scene_bytes(100) - static.scene_bytes(100) == saved


def test_a_forward_that_refuses_the_static_decoders_arguments_falls_back_to_generate(
        checkpoints: dict[str, Path], scenes: list[CaptionRequest],
        monkeypatch: pytest.MonkeyPatch) -> None:
    name = GREEDY[0]
    model = captioner(name, checkpoints[name], "static")
    real = model.model.forward

    @functools.wraps(real)  # generate reads the signature
    def older_forward(*args: Any, **kwargs: Any) -> Any:
        if _static_prefill(kwargs):  # not called by generate
            raise TypeError("forward() got an unexpected keyword argument 'logits_to_keep'")
        return real(*args, **kwargs)

    monkeypatch.setattr(model.model, "forward", older_forward)
    captions = model.generate(scenes)
    assert [i for i, _ in captions] == [0, 1, 2]
    assert all(c.new_tokens == 10 and not c.error for _, c in captions)
    assert model._static is None and model.facts()["decoder"] == "generate"


def _static_prefill(kwargs: dict[str, Any]) -> bool:
    """The static decoder's prefill call: its cache's layers write into the buffers."""
    given = kwargs.get("cache", kwargs.get("past_key_values"))
    return any(type(layer).__name__ == "BufferLayer" for layer in getattr(given, "layers", ()))


@pytest.mark.parametrize("name", ["llava-v1.6-vicuna-7b", "instructblip-vicuna-7b"])
def test_the_prefill_writes_into_the_buffers_or_its_cache_is_copied(
        name: str, checkpoints: dict[str, Path], instructblip: Path,
        scenes: list[CaptionRequest], monkeypatch: pytest.MonkeyPatch) -> None:
    """The prefill's keys and values land in the decoder's buffers (one copy of the cache, and
    the batch planner counts one); a forward that keeps a cache of its own instead (a name for
    the argument it does not know) is copied from, with the same tokens."""
    folder = instructblip if name == "instructblip-vicuna-7b" else checkpoints[name]
    model = captioner(name, folder, "static")
    assert model._static.in_place is True  # expected from the forward's signature
    one_copy = model.scene_bytes(100)
    expected = tokens(model, scenes)
    assert model._static.in_place is True
    real = model.model.forward

    @functools.wraps(real)
    def own_cache(*args: Any, **kwargs: Any) -> Any:
        if _static_prefill(kwargs):
            kwargs.pop("cache", None)
            kwargs.pop("past_key_values", None)
        return real(*args, **kwargs)

    monkeypatch.setattr(model.model, "forward", own_cache)
    assert tokens(model, scenes) == expected
    assert model._static.in_place is False and model.scene_bytes(100) > one_copy


def test_the_caption_stage_decodes_on_its_own_stream(checkpoints: dict[str, Path],
                                                     scenes: list[CaptionRequest],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Every GPU step of a batch (the copy in, prefill, decode, read-back) runs on the stage's
    own stream, so the other components' read-backs on the default stream never wait behind the
    captioner's queued steps. On CPU there is no stream: the same captions either way."""
    import contextlib

    model = captioner(GREEDY[0], checkpoints[GREEDY[0]], "static")
    assert model._stream is None  # CPU
    expected = tokens(model, scenes)
    entered: list[object] = []
    inside = [False]

    @contextlib.contextmanager
    def stream(which: object) -> Any:
        entered.append(which)
        inside[0] = True
        try:
            yield
        finally:
            inside[0] = False

    moves = model._to_device

    def to_device(inputs: Any) -> Any:
        assert inside[0], "inputs moved outside the caption stage's stream"
        return moves(inputs)

    monkeypatch.setattr(torch.cuda, "stream", stream)
    monkeypatch.setattr(model, "_to_device", to_device)
    model._stream = "the caption stream"
    assert tokens(model, scenes) == expected
    model.short_generate(model.prepare(scenes), 2)
    assert entered == ["the caption stream"] * 2


def test_the_memory_derived_batch_fills_whole_graph_buckets(
        checkpoints: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """With CUDA graphs (rows padded to buckets of 8) a batch that memory allows at 36 runs as
    32, so no step reads padding rows; without graphs it stays 36."""
    from scenescribe.captions.planning import whole_graph_buckets
    from scenescribe.captions.static_decode import BUCKET

    assert [whole_graph_buckets(n) for n in (1, 7, 8, 36, 64)] == [1, 7, 8, 32, 64]
    model = captioner(GREEDY[0], checkpoints[GREEDY[0]], "static")
    monkeypatch.setattr(model, "device", "cuda")  # its planning counts bfloat16 from here
    per_scene = model.scene_bytes(100)
    monkeypatch.setattr(torch.cuda, "mem_get_info",
                        lambda device=None: (int(36.5 * per_scene / 0.85), 0))
    assert model.batch_size(100) == 36
    model._static.graphs = True
    assert model.batch_size(100) == 32 and 32 % BUCKET == 0
