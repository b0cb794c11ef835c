"""Soak runs (marked ``slow``) run only when asked for: ``make soak`` (``-m slow``)."""

from __future__ import annotations


def pytest_collection_modifyitems(config, items):
    if "slow" in (config.getoption("-m") or ""):
        return
    soak = [item for item in items if "slow" in item.keywords and "tests/reliability" in str(item.fspath)]
    if soak:
        config.hook.pytest_deselected(items=soak)
        items[:] = [item for item in items if item not in soak]
