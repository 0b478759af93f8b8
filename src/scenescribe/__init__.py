"""scenescribe: videos into scene-by-scene structured text, with real-time-factor benchmarks.

The library API (``scenescribe.run``, ``scenescribe.detect_scenes``, ...) is what the CLI wraps.
Importing this package imports no torch, transformers or ultralytics: backends import them.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

logging.getLogger("scenescribe").addHandler(logging.NullHandler())

# Public names, resolved lazily so ``import scenescribe`` stays light.
_EXPORTS = {
    "run": "scenescribe.pipeline",
    "VideoResult": "scenescribe.pipeline",
    "RunResult": "scenescribe.pipeline",
    "detect_scenes": "scenescribe.pipeline",
    "probe": "scenescribe.media",
    "RunOptions": "scenescribe.options",
    "ShotOptions": "scenescribe.options",
    "FrameOptions": "scenescribe.options",
    "SpeechOptions": "scenescribe.options",
    "SoundOptions": "scenescribe.options",
    "ObjectOptions": "scenescribe.options",
    "CaptionOptions": "scenescribe.options",
    "load_config": "scenescribe.options",
    "SceneRecord": "scenescribe.records",
    "Scene": "scenescribe.records",
    "VideoInfo": "scenescribe.records",
    "load_records": "scenescribe.exports",
    "export": "scenescribe.exports",
    "ScenescribeError": "scenescribe.errors",
    "InputError": "scenescribe.errors",
    "ConfigError": "scenescribe.errors",
    "ModelNotFoundError": "scenescribe.errors",
}

__all__ = [*sorted(_EXPORTS), "__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'scenescribe' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


if TYPE_CHECKING:  # pragma: no cover
    from scenescribe.errors import ConfigError, InputError, ModelNotFoundError, ScenescribeError
    from scenescribe.exports import export, load_records
    from scenescribe.media import probe
    from scenescribe.options import (
        CaptionOptions,
        FrameOptions,
        ObjectOptions,
        RunOptions,
        ShotOptions,
        SoundOptions,
        SpeechOptions,
        load_config,
    )
    from scenescribe.pipeline import RunResult, VideoResult, detect_scenes, run
    from scenescribe.records import Scene, SceneRecord, VideoInfo
