"""Each module imports alone, without other extras' packages and without side effects."""

from __future__ import annotations

import pytest

from tests.isolation import ALLOWED, check, present


@pytest.mark.parametrize("module", [m for m in ALLOWED if present(m)])
def test_module_imports_only_its_own_extras(module: str) -> None:
    assert check(module) == []


def test_table_covers_every_module_on_disk() -> None:
    from tests.isolation import SRC

    on_disk = {
        f"gennet_toolkit.{p.stem if p.suffix == '.py' else p.name}"
        for p in SRC.iterdir()
        if not p.name.startswith(("_", ".")) and (p.suffix == ".py" or (p / "__init__.py").exists())
    }
    missing = on_disk - set(ALLOWED)
    assert not missing, f"add these modules to tests/isolation.py: {sorted(missing)}"
