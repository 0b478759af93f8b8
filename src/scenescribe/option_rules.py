"""What each option accepts. Checked when an options dataclass is built, so the CLI, config files
and the Python API reject the same values, with one line naming the option (and its CLI flag),
what was expected and what was found.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from scenescribe.errors import OptionError, redact_url

# (what is expected, in words; the test). The test sees a value of any type.
Rule = tuple[str, Callable[[Any], bool]]

# CLI flags of the options that have one, named in messages next to the config key.
FLAGS = {
    "shots.backend": "--shots", "shots.min_scene_len": "--min-scene-len",
    "shots.max_scene_len": "--max-scene-len", "frames.short_side": "--frame-size",
    "speech.backend": "--speech", "sounds.backend": "--sounds", "objects.backend": "--objects",
    "objects.sample_fps": "--object-fps", "captions.models": "--vlm",
    "captions.max_new_tokens": "--max-new-tokens", "captions.prompt": "--prompt",
    "captions.batch_size": "--batch-size", "captions.dtype": "--dtype",
    "captions.quantization": "--quantization", "device": "--device", "stages": "--stages",
    "model_dir": "--model-dir", "executor": "--executor", "address": "--address",
}
MIN_MAX_SCENE_LEN = 1.0  # seconds; shorter forced splits only multiply scenes (1e-9 took 4 GB)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def number(lo: float, hi: float = math.inf, *, above: bool = False) -> Rule:
    """A finite number in ``[lo, hi]`` (``(lo, hi]`` when ``above``)."""
    words = f"a finite number {'>' if above else '>='} {lo:g}"
    if hi < math.inf:
        words += f" and <= {hi:g}"
    return words, lambda v: _number(v) and (v > lo if above else v >= lo) and v <= hi


def integer(lo: int, hi: int | None = None) -> Rule:
    words = f"an integer >= {lo}" if hi is None else f"an integer from {lo} to {hi}"
    return words, lambda v: (isinstance(v, int) and not isinstance(v, bool) and v >= lo
                             and (hi is None or v <= hi))


def choice(*values: str) -> Rule:
    return "one of " + ", ".join(values), lambda v: v in values


def optional(rule: Rule) -> Rule:
    return f"{rule[0]} or nothing", lambda v: v is None or rule[1](v)


TEXT: Rule = ("non-empty text", lambda v: isinstance(v, str) and bool(v.strip()))
FLAG: Rule = ("true or false", lambda v: isinstance(v, bool))
URL: Rule = ("an http:// or https:// URL",
             lambda v: isinstance(v, str) and re.match(r"https?://[^/\s]+", v) is not None)
NAMES: Rule = ("a list of names", lambda v: isinstance(v, tuple)
               and all(isinstance(x, str) and x.strip() for x in v))
POSITIONS: Rule = ("a non-empty list of fractions in [0, 1)", lambda v: isinstance(v, tuple)
                   and bool(v) and all(_number(x) and 0 <= x < 1 for x in v))
TRACKER: Rule = ("bytetrack, botsort or a tracker .yaml file", lambda v: isinstance(v, str) and (
    v in ("bytetrack", "botsort") or v.endswith((".yaml", ".yml"))))
SCENE_CAP: Rule = (f"0 (never split) or a finite number of seconds >= {MIN_MAX_SCENE_LEN:g}",
                   lambda v: _number(v) and (v == 0 or v >= MIN_MAX_SCENE_LEN))

RULES: dict[str, dict[str, Rule]] = {
    "shots": {"backend": TEXT, "min_scene_len": number(0, 3600),
              "max_scene_len": SCENE_CAP, "threshold": optional(number(0)),
              "downscale_width": integer(16, 4096), "threads": integer(0, 1024),
              "workers": integer(0, 1024)},
    "frames": {"positions": POSITIONS, "short_side": integer(16, 8192),
               "jpeg_quality": integer(1, 100)},
    "speech": {"backend": TEXT, "weights": optional(TEXT), "language": optional(TEXT),
               "batch_size": integer(1, 4096), "vad": FLAG, "beam_size": integer(1, 64),
               "compute_type": TEXT,
               "decoder": choice("auto", "static", "graph", "generate"),
               "api_base": optional(URL), "api_model": optional(TEXT),
               "api_concurrency": integer(1, 256)},
    "sounds": {"backend": TEXT, "weights": optional(TEXT), "top_k": integer(1, 1000),
               "min_score": number(0, 1), "min_context": number(0, 600),
               "redundant_correlation": number(-1, 1e9)},
    "objects": {"backend": TEXT, "weights": optional(TEXT), "sample_fps": number(0, 240, above=True),
                "confidence": number(0, 1), "imgsz": integer(32, 8192), "tracker": TRACKER},
    "captions": {"models": NAMES, "weights": optional(TEXT), "max_new_tokens": integer(1, 1 << 20),
                 "min_new_tokens": integer(0, 1 << 20), "prompt": optional(TEXT),
                 "batch_size": integer(0, 4096), "max_batch": integer(0, 4096),
                 "adaptive_batch": FLAG,
                 "dtype": choice("auto", "bfloat16", "float16", "float32"),
                 "quantization": optional(choice("nf4")),
                 "attention": choice("auto", "sdpa", "flash_attention_2", "eager"),
                 "grounding": FLAG, "random_weights": FLAG, "use_cache": FLAG,
                 "cache": choice("dynamic", "static"),
                 "decoder": choice("auto", "graph", "static", "generate"),
                 "api_base": optional(URL),
                 "api_concurrency": integer(1, 256)},
    "run": {"device": ("auto, cpu, cuda or cuda:N",
                       lambda v: isinstance(v, str) and re.fullmatch(r"auto|cpu|cuda(:\d+)?", v)
                       is not None),
            "model_dir": optional(TEXT), "parallel": optional(FLAG),
            "executor": choice("local", "ray"), "address": optional(TEXT)},
}


def fail(name: str, expected: str, value: Any) -> OptionError:
    """The one-line error: option (and flag), what was expected, what was found."""
    flag = FLAGS.get(name.removeprefix("run."))
    label = name.removeprefix("run.") + (f" ({flag})" if flag else "")
    # A malformed URL may still hold user:key@: never echo it.
    shown = repr(redact_url(value) if name.endswith("api_base") and isinstance(value, str)
                 else value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    kind = "" if _number(value) or value is None else f" ({type(value).__name__})"
    return OptionError(f"{label}: expected {expected}, found {shown}{kind}")


_LISTS = ("positions", "models", "stages")


def check_fields(options: Any, section: str) -> None:
    """Raise ``OptionError`` for the first value of ``options`` its rule rejects."""
    for name in _LISTS:
        # A list from Python code is taken as the tuple the frozen dataclass needs.
        if isinstance(getattr(options, name, None), list):
            object.__setattr__(options, name, tuple(getattr(options, name)))
    for name, (expected, test) in RULES[section].items():
        value = getattr(options, name)
        if not test(value):
            raise fail(f"{section}.{name}", expected, value)
    if section == "shots" and 0 < options.max_scene_len < options.min_scene_len:
        raise fail("shots.max_scene_len", f"0 or >= min_scene_len ({options.min_scene_len:g})",
                   options.max_scene_len)
    if section == "captions" and options.min_new_tokens > options.max_new_tokens:
        raise fail("captions.min_new_tokens", f"<= max_new_tokens ({options.max_new_tokens})",
                   options.min_new_tokens)


def check_run(options: Any, components: tuple[str, ...], sections: dict[str, type]) -> None:
    """The run-level values; the sections checked themselves when they were built."""
    for section, cls in sections.items():
        if not isinstance(getattr(options, section), cls):
            raise fail(f"run.{section}", f"{cls.__name__}", getattr(options, section))
    check_fields(options, "run")
    stages = options.stages
    if not isinstance(stages, tuple) or any(s not in components for s in stages):
        raise fail("run.stages", f"some of {', '.join(components)} (or none)", stages)
