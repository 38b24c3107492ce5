"""The README stays true to the code: every setting is in its settings table, with its default."""

from __future__ import annotations

import re
import typing
from pathlib import Path

from app.settings import Settings

README = Path(__file__).resolve().parents[1] / "README.md"


APP = README.parent / "app"
SET_UP_ONLY = ("storage.py", "weights")  # BGR_* variables the weights tool (and the cache folder) read, not the service's settings


def settings_rows() -> dict[str, str]:
    """Each row of the settings table: the variable and the rest of its row."""
    return dict(re.findall(r"^\| `(BGR_[A-Z0-9_]+)` \|(.*)$", README.read_text(), flags=re.MULTILINE))


def test_every_setting_has_a_row_in_the_readme_table():
    rows = set(settings_rows())
    settings = {f"BGR_{name.upper()}" for name in Settings.model_fields}
    assert settings - rows == set()
    # And every other row is a variable the set-up code reads.
    set_up_code = "".join(path.read_text() for name in SET_UP_ONLY for path in sorted((APP / name).glob("**/*.py")) or [APP / name])
    assert {row for row in rows - settings if row not in set_up_code} == set()


def test_each_choice_of_a_setting_is_named_in_its_row():
    rows = settings_rows()
    for name, field in Settings.model_fields.items():
        if typing.get_origin(field.annotation) is typing.Literal:
            row = rows[f"BGR_{name.upper()}"]
            assert all(f"`{choice}`" in row for choice in typing.get_args(field.annotation)), name


def test_every_default_in_the_readme_table_is_the_codes():
    documented = dict(re.findall(r"^\| `(BGR_[A-Z0-9_]+)` \| ([^|]*?) \|", README.read_text(), flags=re.MULTILINE))
    defaults = Settings()
    for field in Settings.model_fields:
        name = f"BGR_{field.upper()}"
        value = documented[name]
        if value == "(none)":
            assert not getattr(defaults, field), name
            continue
        default = getattr(defaults, field)
        if isinstance(default, Path):  # documented relative to the checkout
            assert README.parent / value.strip("`") == default, name
            continue
        as_set = Settings.from_env({name: value.strip("`")})
        assert getattr(as_set, field) == default, f"{name}: README says {value}"


def test_the_models_table_lists_every_catalogued_network_with_its_licence_where_it_comes_from_and_whether_it_was_measured():
    from app.catalogue import NETWORKS

    catalogue_row = r"^\| `([a-z0-9_.-]+)` \| [^\n]*measured here \|$"  # the catalogue table's rows end in its last column
    rows = {m.group(1): m.group(0) for m in re.finditer(catalogue_row, README.read_text(), flags=re.MULTILINE)}
    for network in NETWORKS:
        row = rows[network.name]
        assert network.licence.name in row and network.purpose in row, network.name
        assert f"{network.fetched_from.name}: {network.fetched_from.licence.split(' (')[0]}" in row, network.name
        assert row.endswith("| measured here |" if network.measured else "| not measured here |"), network.name
        assert ("needs `BGR_ACCEPT_LICENCES`" in row) == network.needs_acceptance, network.name
