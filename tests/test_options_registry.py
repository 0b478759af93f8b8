"""Options parsing and precedence, and the model registry's resolution."""

from __future__ import annotations

from pathlib import Path

import pytest

from scenescribe import registry
from scenescribe.errors import ConfigError, ModelNotFoundError
from scenescribe.options import RunOptions, ShotOptions, load_config, merge


def test_config_file_and_unknown_keys(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('stages = ["speech"]\n[shots]\nmin_scene_len = 1.5\n[frames]\npositions = [0.5]\n')
    options = load_config(cfg)
    assert options.shots.min_scene_len == 1.5 and options.frames.positions == (0.5,)
    assert options.stages == ("speech",)
    cfg.write_text("[shots]\nmin_scene = 1.5\n")
    with pytest.raises(ConfigError, match="unknown option.*min_scene.*valid:.*min_scene_len"):
        load_config(cfg)
    cfg.write_text("[shotz]\n")
    with pytest.raises(ConfigError, match="unknown section"):
        load_config(cfg)


def test_cli_values_override_config_and_none_keeps_it() -> None:
    base = RunOptions(shots=ShotOptions(min_scene_len=2.0, backend="content"))
    merged = merge(base.shots, {"min_scene_len": 0.5, "backend": None}, "cli")
    assert merged.min_scene_len == 0.5 and merged.backend == "content"


def test_unknown_model_lists_known_ones() -> None:
    with pytest.raises(ConfigError, match="known: .*adaptive"):
        registry.get_entry("nope", "shots")


def test_every_entry_names_an_importable_target_module() -> None:
    kinds = {e.kind for e in registry.entries()}
    assert kinds == {"shots", "speech", "sounds", "objects", "captioner"}
    for entry in registry.entries():
        module, _, cls = entry.target.partition(":")
        assert module.startswith("scenescribe.") and cls


def test_resolution_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    entry = registry.get_entry("whisper-tiny.en", "speech")
    explicit = tmp_path / "explicit"
    explicit.mkdir()
    assert registry.resolve_weights(entry, path=explicit) == explicit
    local = tmp_path / "models" / "whisper" / "hf-whisper-tiny.en"
    local.mkdir(parents=True)
    assert registry.resolve_weights(entry, model_dir=tmp_path / "models") == local
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="openai/whisper-tiny.en.*offline"):
        registry.resolve_weights(entry, model_dir=tmp_path / "empty")
