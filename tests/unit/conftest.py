"""The unit tier: tests of pure logic that need no server. Every test here is marked `unit`, so
`pytest -m unit` runs them alone, in seconds, on a machine without PostgreSQL, MariaDB or
RabbitMQ. A test that needs a server belongs in tests/integration/ or tests/faults/."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent


@pytest.hookimpl(tryfirst=True)  # before `-m unit` selects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.unit)
