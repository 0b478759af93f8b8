"""Captioners on the shared transformers backend, each architecture built tiny with random weights.

Every model is saved with ``save_pretrained`` into a model directory and created through the
registry exactly as the pipeline does. Scenes have two real JPEG frames of different sizes and
prompts of different lengths, so batches are padded. What is checked: batched greedy captions
are token-for-token those of one scene per call; ``new_tokens`` and the decoded text cover only
the new tokens up to the end token (against a hand-written greedy loop); out-of-memory errors
halve the batch and, for a scene that fails alone, leave an error while the run goes on; the
full-size configs have the published parameter counts; random-weights mode loads with no files.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scenescribe import registry
from scenescribe.captions.base import DEFAULT_PROMPT, CaptionRequest
from scenescribe.errors import ConfigError, InputError
from scenescribe.options import CaptionOptions
from scenescribe.progress import NullProgress

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from scenescribe.testing import stand_ins  # noqa: E402
from scenescribe.testing.tiny import TINY_CONFIGS, build_tiny, tiny_names  # noqa: E402

NEW = 8
# Frame sizes (width, height) and colours: every frame differs, so do image-token counts.
FRAMES = [((64, 48), (200, 40, 40)), ((80, 40), (40, 200, 40)), ((48, 64), (40, 40, 200)),
          ((100, 56), (200, 200, 40)), ((60, 60), (40, 200, 200)), ((90, 50), (200, 40, 200)),
          ((40, 70), (120, 120, 120)), ((72, 54), (250, 250, 250))]


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models on a shared 2-core machine run ~10x faster on one thread than on two."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny_vlms")
    for name in tiny_names():
        build_tiny(name, root)
    return root


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> list[CaptionRequest]:
    from PIL import Image

    folder = tmp_path_factory.mktemp("frames")
    requests = []
    for i in range(4):
        paths = []
        for j in range(2):
            size, colour = FRAMES[2 * i + j]
            path = folder / f"scene{i}_{j}.jpg"
            Image.new("RGB", size, colour).save(path, quality=90)
            paths.append(str(path))
        # Different grounding lengths: prompts of different lengths, so batches are padded.
        context = " ".join(["Objects detected: person (x1), car (x2)."] * i)
        requests.append(CaptionRequest(i, tuple(paths), context))
    return requests


def create(name: str, model_dir: Path, **options: Any) -> Any:
    opts = CaptionOptions(max_new_tokens=NEW, **options)
    return registry.create(name, "captioner", options=opts, device="cpu", model_dir=model_dir)


def record_tokens(captioner: Any) -> dict[int, list[int]]:
    """Spy on ``generate``: the new token ids of every scene, by scene index."""
    tokens: dict[int, list[int]] = {}
    model_generate, batch_generate = captioner.model.generate, captioner.generate_prepared

    def spy_model(**kwargs: Any) -> Any:
        out = model_generate(**kwargs)
        spy_model.new = out[:, kwargs["input_ids"].shape[1]:].tolist()
        return out

    def spy_batch(batch: Any, inputs: Any) -> Any:
        results = batch_generate(batch, inputs)
        for request, row in zip(batch, spy_model.new, strict=True):
            tokens[request.index] = row
        return results

    captioner.model.generate = spy_model
    captioner.generate_prepared = spy_batch
    return tokens


def run(captioner: Any, scenes: list[CaptionRequest], batch_size: int) -> dict[int, Any]:
    captioner.options = dataclasses.replace(captioner.options, batch_size=batch_size)
    out = dict(captioner.caption(scenes, NullProgress()))
    assert sorted(out) == [s.index for s in scenes]
    return out


@pytest.mark.parametrize("name", sorted(TINY_CONFIGS))
def test_batched_captions_equal_one_scene_per_call(name: str, model_dir: Path,
                                                   scenes: list[CaptionRequest]) -> None:
    captioner = create(name, model_dir)
    captioner.load()
    tokens = record_tokens(captioner)
    batched = run(captioner, scenes, batch_size=4)
    batched_tokens = dict(tokens)
    single = run(captioner, scenes, batch_size=1)
    assert batched_tokens == tokens, f"{name}: batched tokens differ from one-at-a-time"
    assert batched == single
    for index, caption in single.items():
        assert caption.error is None
        assert 0 < caption.new_tokens <= NEW
        assert caption.new_tokens == len(tokens[index]) or tokens[index][caption.new_tokens] in \
            captioner._stop_ids()
    # The frames matter: two scenes with different images do not get the same tokens.
    assert len({tuple(t) for t in tokens.values()}) > 1
    captioner.unload()
    assert captioner.model is None and captioner.processor is None


def _manual_greedy(captioner: Any, request: CaptionRequest, steps: int) -> list[int]:
    """Argmax over the full sequence at each step, no cache, no ``generate``."""
    images = captioner.images(request)
    inputs = captioner.encode([images], [captioner.prompt(request, len(images))])
    ids, mask = inputs.pop("input_ids"), inputs.pop("attention_mask")
    new: list[int] = []
    for _ in range(steps):
        logits = captioner.model(input_ids=ids, attention_mask=mask, use_cache=False,
                                 **inputs).logits
        token = int(logits[0, -1].argmax())
        new.append(token)
        ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
        mask = torch.cat([mask, torch.ones((1, 1), dtype=mask.dtype)], dim=1)
    return new


@pytest.mark.parametrize("name", ["llava-v1.6-mistral-7b", "smolvlm2"])
def test_greedy_new_tokens_only_and_counted_to_the_end_token(
        name: str, model_dir: Path, scenes: list[CaptionRequest],
        monkeypatch: pytest.MonkeyPatch) -> None:
    captioner = create(name, model_dir)
    captioner.load()
    tokens = record_tokens(captioner)
    scene = scenes[2]
    caption = dict(captioner.caption([scene], NullProgress()))[scene.index]
    expected = _manual_greedy(captioner, scene, NEW)
    assert tokens[scene.index] == expected
    tokenizer = captioner.processor.tokenizer
    assert caption.new_tokens == NEW
    assert caption.text == tokenizer.decode(expected, skip_special_tokens=True).strip()
    assert DEFAULT_PROMPT[:20] not in caption.text  # the prompt is not echoed
    # Declare the fourth generated token an end token: the caption stops before it.
    stop = expected[3]
    cut = expected.index(stop)
    monkeypatch.setattr(captioner, "_eos_ids", lambda: [stop])
    short = dict(captioner.caption([scene], NullProgress()))[scene.index]
    assert short.new_tokens == cut
    assert short.text == tokenizer.decode(expected[:cut], skip_special_tokens=True).strip()


def _oom_when(captioner: Any, fails: Any) -> list[int]:
    """Make ``generate`` raise CUDA's out-of-memory error when ``fails(batch)``; log batch sizes."""
    sizes: list[int] = []
    model_generate, batch_generate = captioner.model.generate, captioner.generate_prepared
    current: list[list[int]] = [[]]

    def generate(**kwargs: Any) -> Any:
        sizes.append(kwargs["input_ids"].shape[0])
        if fails(current[0]):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return model_generate(**kwargs)

    def batch(requests: Any, inputs: Any) -> Any:
        current[0] = [r.index for r in requests]
        return batch_generate(requests, inputs)

    captioner.model.generate = generate
    captioner.generate_prepared = batch
    return sizes


def test_out_of_memory_halves_the_batch_and_keeps_every_caption(
        model_dir: Path, scenes: list[CaptionRequest]) -> None:
    name = "llava-v1.6-vicuna-7b"
    reference = run(create(name, model_dir), scenes, batch_size=1)
    captioner = create(name, model_dir)
    captioner.load()
    sizes = _oom_when(captioner, lambda indices: len(indices) > 1)
    out = run(captioner, scenes, batch_size=4)
    assert out == reference
    assert sizes[:3] == [4, 2, 1] and set(sizes[3:]) == {1}
    assert captioner._batch_cap == 1


def test_out_of_memory_alone_records_an_error_and_goes_on(
        model_dir: Path, scenes: list[CaptionRequest]) -> None:
    name = "llava-v1.6-vicuna-7b"
    reference = run(create(name, model_dir), scenes, batch_size=1)
    captioner = create(name, model_dir)
    captioner.load()
    _oom_when(captioner, lambda indices: 2 in indices)
    out = run(captioner, scenes, batch_size=2)
    failed = out.pop(2)
    assert failed.text == "" and failed.new_tokens == 0
    assert failed.error is not None and failed.error.startswith("out of memory")
    assert out == {i: c for i, c in reference.items() if i != 2}


def test_random_weights_mode_needs_no_files(monkeypatch: pytest.MonkeyPatch,
                                            scenes: list[CaptionRequest]) -> None:
    """The benchmark path: config and processor from code, output forced to full length."""
    monkeypatch.setattr(stand_ins, "published_config", lambda name: TINY_CONFIGS[name](name))
    captioner = registry.create("llava-v1.6-mistral-7b", "captioner", device="cpu", model_dir=None,
                                options=CaptionOptions(max_new_tokens=6, random_weights=True))
    out = dict(captioner.caption(scenes[:2], NullProgress()))
    assert [c.new_tokens for c in out.values()] == [6, 6]


# Published parameter counts (model cards): the full-size configs are the real architectures.
PUBLISHED_PARAMS = {"llava-v1.6-mistral-7b": 7.57e9, "llava-v1.6-vicuna-7b": 7.06e9,
                    "instructblip-vicuna-7b": 7.91e9, "qwen2.5-vl-7b": 8.29e9, "smolvlm2": 0.507e9}


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_full_size_configs_have_the_published_size(name: str) -> None:
    cls = registry.get_entry(name).load_class()
    config = stand_ins.published_config(name)
    with torch.device("meta"):
        model = cls.transformers_class()._from_config(config)
    count = sum(p.numel() for p in model.parameters())
    assert count == pytest.approx(PUBLISHED_PARAMS[name], rel=0.005)


def test_offline_llava_processor_matches_workload_w2(tmp_path: Path) -> None:
    """BENCHMARK W2: two 672x378 frames, about 1,940 AnyRes tokens each, 3,938 in all."""
    from PIL import Image


    name = "llava-v1.6-mistral-7b"
    frames = []
    for i in range(2):
        frames.append(str(tmp_path / f"f{i}.jpg"))
        Image.new("RGB", (672, 378), (90 * i, 60, 30)).save(frames[-1])
    captioner = create(name, tmp_path)
    captioner.processor = stand_ins.offline_processor(name, stand_ins.published_config(name))
    request = CaptionRequest(0, tuple(frames))
    images = captioner.images(request)
    ids = captioner.encode([images], [captioner.prompt(request, 2)])["input_ids"][0].tolist()
    assert ids.count(32000) == 2 * 1948  # 24x24 base + 28x48 unpadded + 28 newlines, per frame
    assert len(ids) == pytest.approx(3938, rel=0.01)
    assert captioner.prompt_length(request) == pytest.approx(len(ids), abs=2)
    assert len(captioner.processor.tokenizer) == 32064


def test_grounding_context_goes_into_the_prompt(model_dir: Path) -> None:
    captioner = create("qwen2.5-vl-7b", model_dir, prompt="Say what happens.")
    captioner.load()
    bare = captioner.prompt(CaptionRequest(0, ("a.jpg",)), 1)
    grounded = captioner.prompt(CaptionRequest(0, ("a.jpg",), 'Speech in this scene: "hi"'), 1)
    assert "Say what happens." in bare and "Speech in this scene" not in bare
    assert grounded.index('Speech in this scene: "hi"') < grounded.index("Say what happens.")
    assert bare.count("<|image_pad|>") == 1


def test_instructblip_stitches_frames_into_one_panorama(model_dir: Path,
                                                        scenes: list[CaptionRequest]) -> None:
    captioner = create("instructblip-vicuna-7b", model_dir)
    (image,) = captioner.images(scenes[0])  # frames 64x48 (red) and 80x40 (green)
    assert image.size == (64 + 96, 48)  # the second frame scaled to height 48 keeps 2:1
    red, green = image.getpixel((10, 24)), image.getpixel((150, 24))
    assert red[0] > 150 > red[1] and green[1] > 150 > green[0]
    captioner.load()
    config = captioner.generation_config()
    assert (config.num_beams, config.min_new_tokens, config.do_sample) == (5, min(10, NEW), False)
    captioner.options = dataclasses.replace(captioner.options, max_new_tokens=32)
    assert captioner.generation_config().min_new_tokens == 10  # the reference's min_length=10


def test_weights_option_and_bad_settings(model_dir: Path, scenes: list[CaptionRequest],
                                         tmp_path: Path) -> None:
    folder = model_dir / "SmolVLM2-500M-Video-Instruct"
    captioner = registry.create("smolvlm2", "captioner", device="cpu", model_dir=None,
                                options=CaptionOptions(weights=str(folder), max_new_tokens=2))
    assert len(dict(captioner.caption(scenes[:1], NullProgress()))) == 1
    with pytest.raises(ConfigError, match="CUDA"):
        create("smolvlm2", model_dir, quantization="nf4").load()
    with pytest.raises(ConfigError, match="dtype"):
        create("smolvlm2", model_dir, dtype="int3").load()
    missing = CaptionRequest(9, (str(tmp_path / "gone.jpg"),))
    with pytest.raises(InputError, match="gone.jpg"):
        list(captioner.caption([missing], NullProgress()))
