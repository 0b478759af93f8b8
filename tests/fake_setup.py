"""Options that route every stage to a fake backend (see ``scenescribe.testing.fakes``)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from scenescribe.options import (
    CaptionOptions,
    ObjectOptions,
    RunOptions,
    ShotOptions,
    SoundOptions,
    SpeechOptions,
)
from scenescribe.testing.fakes import register_fakes

register_fakes()

FAKE_CLI = ["--shots", "fake-shots", "--speech", "fake-speech", "--sounds", "fake-sounds",
            "--objects", "fake-objects", "--device", "cpu"]


def fake_options(*models: str, grounding: bool = False, **captions: Any) -> RunOptions:
    return RunOptions(
        shots=ShotOptions(backend="fake-shots"), speech=SpeechOptions(backend="fake-speech"),
        sounds=SoundOptions(backend="fake-sounds"), objects=ObjectOptions(backend="fake-objects"),
        captions=CaptionOptions(models=models, grounding=grounding, **captions), device="cpu",
        parallel=False)


def with_models(options: RunOptions, *models: str) -> RunOptions:
    return replace(options, captions=replace(options.captions, models=models))
