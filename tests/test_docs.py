"""The README stays true to the code: every setting is in its settings table."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from app.settings import Settings

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_setting_has_a_row_in_the_readme_table():
    rows = set(re.findall(r"^\| `(BGR_[A-Z0-9_]+)` \|", README.read_text(), flags=re.MULTILINE))
    settings = {f"BGR_{field.name.upper()}" for field in dataclasses.fields(Settings)}
    assert settings - rows == set()
