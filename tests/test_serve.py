"""``python -m app``'s process settings: what ``serve`` sets up before uvicorn runs."""

from __future__ import annotations

import signal
import sys

import pytest
import uvicorn

from app import logs
from app.__main__ import serve
from app.settings import Settings, SettingsError


@pytest.mark.parametrize("value", ["0", "-1", "1001"])
def test_switch_interval_out_of_range_is_a_settings_error(value):
    with pytest.raises(SettingsError, match="BGR_SWITCH_INTERVAL_MS"):
        Settings.from_env({"BGR_SWITCH_INTERVAL_MS": value})


def test_serve_sets_the_gil_switch_interval(monkeypatch):
    seen: list[float] = []
    monkeypatch.setattr(logs, "configure", lambda: None)  # keep pytest's logging as it is
    monkeypatch.setattr(uvicorn.Server, "run", lambda self: seen.append(sys.getswitchinterval()))
    before, sigterm = sys.getswitchinterval(), signal.getsignal(signal.SIGTERM)
    try:
        serve(Settings.from_env({"BGR_SWITCH_INTERVAL_MS": "0.5", "BGR_WEIGHTS": "/nonexistent"}))
    finally:
        sys.setswitchinterval(before)
        signal.signal(signal.SIGTERM, sigterm)
    assert seen == [pytest.approx(0.0005)]
