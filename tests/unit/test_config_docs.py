"""`.env.example` and the table of docs/configuration.md are what ingest/config.py declares.

A setting added or changed without running scripts/write_config_docs.py fails here.
"""

from __future__ import annotations

from dotenv import dotenv_values

from ingest.config import Settings, declared_settings
from ingest.config_docs import (
    COMPOSE_VARIABLES,
    CONFIGURATION_PAGE,
    TABLE_BEGIN,
    env_text,
    page_with_table,
    render_env_example,
    render_table,
)
from testlib.processes import ROOT

REGENERATE = "run .venv/bin/python scripts/write_config_docs.py and commit what it writes"


def test_env_example_is_what_the_settings_declare() -> None:
    assert (ROOT / ".env.example").read_text() == render_env_example(), REGENERATE


def test_the_configuration_page_table_is_what_the_settings_declare() -> None:
    page = (ROOT / CONFIGURATION_PAGE).read_text()
    assert page_with_table(page) == page, REGENERATE
    assert page.startswith("# Configuration\n")
    # One table, on that page: no copy elsewhere that nothing regenerates.
    for other in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        if other != ROOT / CONFIGURATION_PAGE:
            assert TABLE_BEGIN not in other.read_text(), other


def test_every_setting_has_its_own_variable_and_a_one_line_meaning() -> None:
    variables = [setting.variable for _, setting in declared_settings()]
    assert len(set(variables)) == len(variables), "two settings read one variable"
    compose_only = {name for _, pairs in COMPOSE_VARIABLES for name, _ in pairs}
    assert sorted(compose_only & set(variables)) == []
    for _, setting in declared_settings():
        # A line break or a pipe would break its table row.
        assert setting.doc.strip(), setting.variable
        assert "\n" not in setting.doc and "|" not in setting.doc, setting.variable


def test_documented_defaults_and_examples_read_back_as_the_defaults() -> None:
    documented = {
        setting.variable: env_text(field.default) for field, setting in declared_settings()
    }
    assert Settings.from_env(documented) == Settings()
    # Empty, as compose passes a tuning variable that .env leaves out, is the default too.
    assert Settings.from_env(dict.fromkeys(documented, "")) == Settings()
    # The table shows the same defaults.
    for variable, default in documented.items():
        cell = f"`{default}`" if default else "unset"
        assert f"| `{variable}` | {cell} |" in render_table(), variable
    assert render_table().startswith(TABLE_BEGIN)

    example = {name: value for name, value in dotenv_values(ROOT / ".env.example").items() if value}
    from_example = Settings.from_env(example)
    for field, setting in declared_settings():
        if setting.example is None:
            assert getattr(from_example, field.name) == field.default, setting.variable
    assert from_example.mysql_url, ".env.example switches the projection on for `ingest up`"
