"""Logging: JSON lines on stdout, daily-rotated files in LOG_DIR, secrets redacted."""

import io
import json
import logging
import logging.handlers

import pytest

from gentask.config import load_settings
from gentask.logs import setup_logging


@pytest.fixture
def restore_root():
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    yield
    for h in list(root.handlers):
        if getattr(h, "_gentask", False):
            root.removeHandler(h)
            h.close()
    root.handlers[:], root.level = saved[0], saved[1]


def test_json_lines_with_extra_fields(restore_root, monkeypatch):
    monkeypatch.setenv("LOG_LEVEL", "debug")
    out = io.StringIO()
    setup_logging(load_settings(), stream=out)
    logging.getLogger("gentask.test").debug("task %s queued", "img-1", extra={"task": "img-1"})
    doc = json.loads(out.getvalue().splitlines()[-1])
    assert doc["level"] == "debug" and doc["message"] == "task img-1 queued" and doc["task"] == "img-1"
    assert doc["logger"] == "gentask.test" and doc["time"].endswith("+00:00")


def test_level_filters(restore_root, monkeypatch):
    monkeypatch.setenv("LOG_LEVEL", "error")
    out = io.StringIO()
    setup_logging(load_settings(), stream=out)
    logging.getLogger("x").warning("hidden")
    assert out.getvalue() == ""


def test_files_rotate_daily_and_keep_log_keep_days(restore_root, monkeypatch, tmp_path):
    monkeypatch.setenv("LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setenv("LOG_KEEP_DAYS", "3")
    setup_logging(load_settings(), stream=io.StringIO())
    logging.getLogger("gentask").info("to the file")
    files = [h for h in logging.getLogger().handlers if isinstance(h, logging.handlers.TimedRotatingFileHandler)]
    assert len(files) == 1 and files[0].when == "MIDNIGHT" and files[0].backupCount == 3
    files[0].flush()
    line = (tmp_path / "logs" / "gentask.log").read_text().splitlines()[-1]
    assert json.loads(line)["message"] == "to the file"


def test_secrets_never_reach_a_line(restore_root, monkeypatch):
    monkeypatch.setenv("ARK_API_KEY", "ark-SECRET-value")
    monkeypatch.setenv("VOLCENGINE_SECRET_KEY", "vsk-SECRET-value")
    out = io.StringIO()
    setup_logging(load_settings(), stream=out)
    logger = logging.getLogger("gentask.providers")
    logger.info("calling with Bearer %s", "ark-SECRET-value", extra={"auth": "Bearer ark-SECRET-value"})
    try:
        raise RuntimeError("signature with vsk-SECRET-value failed")
    except RuntimeError:
        logger.exception("vendor call failed")
    text = out.getvalue()
    assert "SECRET" not in text
    assert text.count("***") >= 3


def test_objects_passed_as_extras_are_left_out(restore_root):
    class Settings:
        def __repr__(self):
            return "OperatorSettings(" + "x" * 2000 + ")"
    out = io.StringIO()
    setup_logging(load_settings(), stream=out)
    logging.getLogger("kopf.objects").info("handler done", extra={"settings": Settings(), "k8s_ref": {"name": "t"}})
    doc = json.loads(out.getvalue().splitlines()[-1])
    assert "settings" not in doc and doc["k8s_ref"] == {"name": "t"}
