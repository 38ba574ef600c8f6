"""Write .env.example and the README's configuration table from the settings in ingest/config.py.

    .venv/bin/python scripts/write_config_docs.py

Run it after adding or changing a setting; tests/test_config_docs.py fails until it has run.
"""

from __future__ import annotations

from pathlib import Path

from ingest.config_docs import readme_with_table, render_env_example

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    (ROOT / ".env.example").write_text(render_env_example())
    readme = ROOT / "README.md"
    readme.write_text(readme_with_table(readme.read_text()))


if __name__ == "__main__":
    main()
