"""`gentask provider try`: the way a user checks a key works, and `gentask provider models`."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

from gentask.providers.cli import main
from tests.support.media import mp4_boxes

from .conftest import png_pixels


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """No developer keys or URLs leak in; the CLI's logging setup is undone afterwards."""
    for name in ("ARK_API_KEY", "VOLCENGINE_ACCESS_KEY", "VOLCENGINE_SECRET_KEY", "OPENAI_API_KEY", "ARK_BASE_URL",
                 "VOLCENGINE_VISUAL_BASE_URL", "OPENAI_BASE_URL", "GENTASK_PROVIDERS", "AI_TIMEOUT", "LOG_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir("/tmp")                    # no .env of the repository
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def test_try_fake_image_writes_a_png_and_says_where(tmp_path, capsys):
    assert main(["try", "--provider", "fake", "--model", "fake-image", "--prompt", "a red fox",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"saved {tmp_path}/image-1.png" in out and "served by fake/fake-image" in out
    assert png_pixels((tmp_path / "image-1.png").read_bytes())[:2] == (512, 512)
    summary = json.loads((tmp_path / "result.json").read_text())
    assert summary["servedBy"] == {"provider": "fake", "model": "fake-image"}


def test_the_gentask_command_runs_try_end_to_end(tmp_path):
    done = subprocess.run([sys.executable, "-m", "gentask", "provider", "try", "--provider", "fake", "--model",
                           "fake-image", "--prompt", "a red fox", "--param", "size=96x64", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=60, cwd="/tmp")
    assert done.returncode == 0, done.stderr
    assert png_pixels((tmp_path / "image-1.png").read_bytes())[:2] == (96, 64)


def test_try_against_a_vendor_downloads_the_url_and_records_the_request(vendors, monkeypatch, tmp_path, capsys):
    for name, value in vendors.environ().items():
        monkeypatch.setenv(name, value)
    assert main(["try", "--provider", "volcengine", "--model", "doubao-seedream-3-0-t2i-250415", "--prompt", "a cat",
                 "--param", "size=1280x720", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "result.json").read_text())
    assert summary["files"][0]["url"].startswith(vendors.ark.origin) and summary["requestID"]
    assert png_pixels((tmp_path / "image-1.jpg").read_bytes())[:2] == (1280, 720)   # saved as the vendor named it


def test_try_a_video_shows_progress_while_polling(vendors, monkeypatch, tmp_path, capsys):
    for name, value in vendors.environ().items():
        monkeypatch.setenv(name, value)
    assert main(["try", "--provider", "volcengine", "--model", "jimeng_vgfm_t2v_l20", "--prompt", "rain",
                 "--poll-interval", "0.01", "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "submitted" in err and "queued" in err and "running" in err
    assert mp4_boxes((tmp_path / "video.mp4").read_bytes())[0] == "ftyp"


def test_try_text_saves_the_text(tmp_path, capsys):
    assert main(["try", "--provider", "fake", "--model", "fake-text", "--prompt", "hello", "--param", "maxTokens=5",
                 "--out", str(tmp_path)]) == 0
    assert len((tmp_path / "text.txt").read_text().split()) == 5


def test_a_refused_key_exits_1_with_the_reason(vendors, monkeypatch, tmp_path, capsys):
    for name, value in vendors.environ().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-the-right-one")
    assert main(["try", "--provider", "openai", "--model", "gpt-4.1", "--prompt", "hi", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "AuthenticationFailed" in err and "invalid_api_key" in err and "sk-not-the-right-one" not in err
    assert not (tmp_path / "result.json").exists()


@pytest.mark.parametrize("args, message", [
    (["--model", "fake-image", "--param", "size=10x10"],
     "spec.params.size: '10x10' is not accepted; fake/fake-image accepts"),
    (["--model", "fake-image", "--param", "colour=red"], "expected NAME=VALUE with NAME one of"),
    (["--model", "fake-pony"], "its models: fake-image, fake-video, fake-text"),
])
def test_bad_arguments_exit_2_naming_what_is_accepted(tmp_path, capsys, args, message):
    assert main(["try", "--provider", "fake", "--prompt", "x", "--out", str(tmp_path), *args]) == 2
    assert message in capsys.readouterr().err


def test_a_retired_model_exits_2_naming_its_successor(tmp_path, capsys):
    assert main(["try", "--provider", "openai", "--model", "dall-e-3", "--prompt", "x", "--out", str(tmp_path)]) == 2
    assert "use openai/gpt-image-1.5 instead" in capsys.readouterr().err


def test_models_lists_the_catalog(capsys):
    assert main(["models", "--provider", "openai", "--type", "video"]) == 0
    out = capsys.readouterr().out
    assert "sora-2" in out and "retired 2026-09-24, use volcengine/doubao-seedance-1-0-pro-250528" in out
