"""One options dataclass per component; a run's options gather them.

Precedence: CLI > config file (TOML) > defaults. Unknown keys are rejected with the valid ones.
Every value is checked when its dataclass is built (the CLI, config files and the Python API all
build them), so a bad value fails with one line naming the option before any work starts.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from scenescribe.errors import OptionError, redact_url
from scenescribe.option_rules import check_fields, check_run

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ShotOptions:
    """Shot detection. Lengths in seconds; 0 disables the limit."""

    backend: str = "auto"  # auto: hsvcut on CPU, transnetv2-hsvcut on GPU (README: "Why these defaults")
    min_scene_len: float = 0.2  # music videos cut every 0.3 s; shorter are flashes
    max_scene_len: float = 0.0
    threshold: float | None = None  # backend-specific; None keeps the backend's tuned default
    downscale_width: int = 256  # frames are shrunk to this width before detection
    threads: int = 0  # decoder threads; 0 lets FFmpeg choose
    workers: int = 0  # processes decoding time segments in parallel; 0: all cores on 4+ cores

    def __post_init__(self) -> None:
        check_fields(self, "shots")


@dataclass(frozen=True, slots=True)
class FrameOptions:
    """Frames sampled per scene, saved once as JPEG for every later model."""

    positions: tuple[float, ...] = (0.0, 0.5)  # fractions of the scene: start and middle
    short_side: int = 336
    jpeg_quality: int = 90

    def __post_init__(self) -> None:
        check_fields(self, "frames")


@dataclass(frozen=True, slots=True)
class SpeechOptions:
    backend: str = "auto"  # auto: faster-whisper-tiny.en on CPU, whisper-large-v3 on GPU
    weights: str | None = None
    language: str | None = None  # None: detect
    batch_size: int = 8
    vad: bool = True
    beam_size: int = 1
    compute_type: str = "default"
    decoder: str = "auto"  # transformers Whisper: auto (graph on CUDA), static, graph, generate
    api_base: str | None = None
    api_model: str | None = None  # model name the transcription API serves (default whisper-1)
    api_concurrency: int = 4

    def __post_init__(self) -> None:
        check_fields(self, "speech")


@dataclass(frozen=True, slots=True)
class SoundOptions:
    backend: str = "auto"  # auto: yamnet on CPU, ast-audioset on GPU
    weights: str | None = None
    top_k: int = 5
    min_score: float = 0.1
    min_context: float = 3.0  # seconds of audio given to the tagger for scenes shorter than this
    redundant_correlation: float = 0.95  # skip a tag whose scores track a chosen one (>= 1: off)

    def __post_init__(self) -> None:
        check_fields(self, "sounds")


@dataclass(frozen=True, slots=True)
class ObjectOptions:
    backend: str = "yolov8n"
    weights: str | None = None
    sample_fps: float = 2.0
    confidence: float = 0.25
    imgsz: int = 640
    tracker: str = "bytetrack"

    def __post_init__(self) -> None:
        check_fields(self, "objects")


@dataclass(frozen=True, slots=True)
class CaptionOptions:
    models: tuple[str, ...] = ()  # registry names; "name=/local/path" gives a model its weights
    weights: str | None = None  # set per model from "name=path" when the captioner is created
    max_new_tokens: int = 256
    min_new_tokens: int = 0
    prompt: str | None = None  # None: the reference's caption instruction
    batch_size: int = 0  # 0: chosen from free GPU memory, capped at max_batch
    max_batch: int = 0  # cap on the automatic batch; 0: the family's measured throughput knee
    adaptive_batch: bool = False  # CUDA: time the cap and half of it on the first batches, keep the faster
    dtype: str = "auto"  # auto, bfloat16, float16, float32
    quantization: str | None = None  # "nf4" for 4-bit through bitsandbytes
    attention: str = "auto"  # auto, sdpa, flash_attention_2, eager
    grounding: bool = False  # add transcript, objects and sounds to the prompt
    random_weights: bool = False  # benchmark mode: full-size architecture, random weights
    use_cache: bool = True  # KV cache; off only to reproduce the reference's Phi-3.5 runs
    cache: str = "dynamic"  # "static": KV cache preallocated at full length, written in place
    decoder: str = "auto"  # auto (graph on CUDA for greedy, else generate), graph, static, generate
    api_base: str | None = None
    api_concurrency: int = 8

    def __post_init__(self) -> None:
        check_fields(self, "captions")


@dataclass(frozen=True, slots=True)
class RunOptions:
    """Everything one ``run`` needs. ``stages`` selects the Stage 1 components to compute."""

    shots: ShotOptions = field(default_factory=ShotOptions)
    frames: FrameOptions = field(default_factory=FrameOptions)
    speech: SpeechOptions = field(default_factory=SpeechOptions)
    sounds: SoundOptions = field(default_factory=SoundOptions)
    objects: ObjectOptions = field(default_factory=ObjectOptions)
    captions: CaptionOptions = field(default_factory=CaptionOptions)
    stages: tuple[str, ...] = ("speech", "sounds", "objects")
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    model_dir: str | None = None
    parallel: bool | None = None  # Stage 1 components side by side; None: on GPU hosts only
    executor: str = "local"  # local (this process) or ray (scenescribe[ray]; README: Scale out)
    address: str | None = None  # ray: the cluster to join; None starts a local Ray instance

    def __post_init__(self) -> None:
        check_run(self, STAGE1_COMPONENTS, _section_types())


STAGE1_COMPONENTS = ("speech", "sounds", "objects")
_SECTIONS = ("shots", "frames", "speech", "sounds", "objects", "captions")


def _section_types() -> dict[str, type]:
    return {"shots": ShotOptions, "frames": FrameOptions, "speech": SpeechOptions,
            "sounds": SoundOptions, "objects": ObjectOptions, "captions": CaptionOptions}


def build(cls: type[T], values: Mapping[str, Any], where: str) -> T:
    """Create ``cls`` from a mapping, rejecting unknown keys and coercing lists to tuples."""
    names = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise OptionError(f"{where}: unknown option(s) {', '.join(unknown)}; "
                          f"valid: {', '.join(sorted(names))}")
    clean = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    try:
        return cls(**clean)
    except OptionError as exc:
        raise OptionError(f"{where}: {exc}") from None
    except TypeError as exc:
        raise OptionError(f"{where}: {exc}") from exc


def merge(base: T, overrides: Mapping[str, Any], where: str) -> T:
    """``base`` with ``overrides`` applied; ``None`` values mean "not given" and are skipped."""
    given = {k: v for k, v in overrides.items() if v is not None}
    current = {f.name: getattr(base, f.name) for f in dataclasses.fields(base)}  # type: ignore[arg-type]
    return build(type(base), {**current, **given}, where)


def run_options_from_mapping(data: Mapping[str, Any], where: str = "config") -> RunOptions:
    """Parse ``{"shots": {...}, "speech": {...}, "stages": [...], ...}`` into ``RunOptions``."""
    top = {f.name for f in dataclasses.fields(RunOptions)}
    unknown = sorted(set(data) - top)
    if unknown:
        raise OptionError(f"{where}: unknown section(s) {', '.join(unknown)}; "
                          f"valid: {', '.join(sorted(top))}")
    kwargs: dict[str, Any] = {}
    defaults = RunOptions()
    for key, value in data.items():
        if key in _SECTIONS:
            if not isinstance(value, Mapping):
                raise OptionError(f"{where}: [{key}] must be a table of options, found "
                                  f"{type(value).__name__}")
            kwargs[key] = merge(getattr(defaults, key), value, f"{where} [{key}]")
        else:
            kwargs[key] = tuple(value) if isinstance(value, list) else value
    options = build(RunOptions, kwargs, where)
    validate(options)
    return options


def load_config(path: str | Path) -> RunOptions:
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise OptionError(f"{p}: config file not found") from None
    except OSError as exc:
        raise OptionError(f"{p}: cannot read the config file: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise OptionError(f"{p}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset "
                          f"{exc.start}); TOML files must be UTF-8") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise OptionError(f"{p}: not valid TOML: {exc}") from None
    return run_options_from_mapping(data, where=str(p))


def validate(options: RunOptions) -> None:
    """Check a run's options before any work: every value (again, in case a caller bypassed the
    constructors) and that the requested device exists here."""
    for name in _SECTIONS:
        check_fields(getattr(options, name), name)
    check_run(options, STAGE1_COMPONENTS, _section_types())
    check_executor(options)
    if options.executor == "local":  # on Ray the device is checked on the cluster
        check_device_present(options.device)
    if options.model_dir and not Path(options.model_dir).expanduser().is_dir():
        raise OptionError(f"model_dir (--model-dir): expected an existing folder, found "
                          f"{options.model_dir!r}")


def check_output_folder(out: str | Path) -> None:
    """``--out`` must be a folder this process can write, or creatable inside one; checked with
    a real probe file (permission bits say nothing for root or read-only mounts)."""
    import tempfile

    path = Path(out)
    target = path
    while not target.exists() and target != target.parent:
        target = target.parent  # the nearest existing folder is where writing starts
    if not target.is_dir():
        found = "a file" if target == path else f"a file in its path ({target})"
        raise OptionError(f"--out {path}: expected a folder, found {found}")
    try:
        with tempfile.TemporaryFile(dir=target):
            pass
    except OSError as exc:
        raise OptionError(f"--out {path}: expected a writable folder, but {target} is not "
                          f"writable ({exc.strerror or exc})") from None


def check_executor(options: RunOptions) -> None:
    """Ray must be installed to be asked for; an address means nothing without it."""
    import importlib.util

    if options.executor == "ray" and importlib.util.find_spec("ray") is None:
        raise OptionError("executor (--executor): expected an installed executor, found 'ray' "
                          "but ray is not installed (pip install 'scenescribe[ray]')")
    if options.address is not None and options.executor != "ray":
        raise OptionError(f"address (--address): expected only with executor 'ray', found "
                          f"{options.address!r} with executor {options.executor!r}")


def check_device_present(device: str) -> None:
    """``cuda``/``cuda:N`` must name a GPU torch can see; imports torch only when asked for one."""
    if not device.startswith("cuda"):
        return
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        raise OptionError(f"device (--device): expected a device this machine has, found "
                          f"{device!r} but torch is not installed")
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = int(device.partition(":")[2] or 0)
    if index >= count:
        raise OptionError(f"device (--device): expected a device this machine has (cpu or "
                          f"{count} CUDA GPU(s)), found {device!r}")


def to_dict(options: Any) -> dict[str, Any]:
    """Plain dict of an options dataclass (tuples as lists), for fingerprints and run facts.

    Credentials in ``api_base`` URLs are redacted: this dict is written to ``run.json``.
    """
    return _redacted(dataclasses.asdict(options))


def _redacted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: redact_url(v) if k == "api_base" and isinstance(v, str) else _redacted(v)
                for k, v in value.items()}
    return value
