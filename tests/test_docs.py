"""The README stays true to the code: every setting is in its settings table, with its default."""

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


def test_every_default_in_the_readme_table_is_the_codes():
    documented = dict(re.findall(r"^\| `(BGR_[A-Z0-9_]+)` \| ([^|]*?) \|", README.read_text(), flags=re.MULTILINE))
    defaults = Settings()
    for field in dataclasses.fields(Settings):
        name = f"BGR_{field.name.upper()}"
        value = documented[name]
        if value == "(none)":
            assert not getattr(defaults, field.name), name
            continue
        default = getattr(defaults, field.name)
        if isinstance(default, Path):  # documented relative to the checkout
            assert README.parent / value.strip("`") == default, name
            continue
        as_set = Settings.from_env({name: value.strip("`")})
        assert getattr(as_set, field.name) == default, f"{name}: README says {value}"


def test_the_models_table_lists_every_catalogued_network_with_its_licence_and_whether_it_was_measured():
    from app.catalogue import NETWORKS

    catalogue_row = r"^\| `([a-z0-9_.-]+)` \| [^\n]*measured here \|$"  # the catalogue table's rows end in its last column
    rows = {m.group(1): m.group(0) for m in re.finditer(catalogue_row, README.read_text(), flags=re.MULTILINE)}
    for network in NETWORKS:
        row = rows[network.name]
        assert network.licence.name in row and network.purpose in row, network.name
        assert row.endswith("| measured here |" if network.measured else "| not measured here |"), network.name
        assert ("needs `BGR_ACCEPT_LICENCES`" in row) == network.needs_acceptance, network.name
