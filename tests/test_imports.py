"""`import scenescribe` and `scenescribe --help` stay light: no torch, transformers, ultralytics."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "transformers", "ultralytics", "cv2", "faster_whisper", "ai_edge_litert")


def _loaded_after(code: str) -> list[str]:
    probe = f"import sys\n{code}\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_import_is_light() -> None:
    assert _loaded_after("import scenescribe; scenescribe.RunOptions") == []


def test_cli_help_is_light() -> None:
    code = ("from typer.testing import CliRunner\nfrom scenescribe.cli import app\n"
            "r = CliRunner().invoke(app, ['--help'])\nassert r.exit_code == 0, r.output\n"
            "r = CliRunner().invoke(app, ['run', '--help'])\nassert r.exit_code == 0, r.output")
    assert _loaded_after(code) == []
