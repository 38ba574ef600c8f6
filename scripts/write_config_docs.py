"""Write .env.example and the table of docs/configuration.md from the settings in ingest/config.py.

    .venv/bin/python scripts/write_config_docs.py

Run it after adding or changing a setting; tests/unit/test_config_docs.py fails until it has run.
"""

from __future__ import annotations

from pathlib import Path

from ingest.config_docs import CONFIGURATION_PAGE, page_with_table, render_env_example

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    (ROOT / ".env.example").write_text(render_env_example())
    page = ROOT / CONFIGURATION_PAGE
    page.write_text(page_with_table(page.read_text()))


if __name__ == "__main__":
    main()
