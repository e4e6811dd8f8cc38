"""Each module imports alone, without other extras' packages and without side effects."""

from __future__ import annotations

from pathlib import Path

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


def test_check_reports_foreign_extras_and_logging_side_effects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests import isolation

    (tmp_path / "gn_fake_module.py").write_text(
        "import logging\nimport starlette\nlogging.basicConfig()\n"
    )
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setitem(isolation.EXTRA_PACKAGES, "fake", frozenset({"starlette"}))
    monkeypatch.setitem(isolation.ALLOWED, "gn_fake_module", frozenset())
    problems = check("gn_fake_module")
    assert any("'starlette'" in p and "not in its extras" in p for p in problems), problems
    assert "configured the root logger" in problems

    monkeypatch.setitem(isolation.ALLOWED, "gn_fake_module", frozenset({"fake"}))
    assert check("gn_fake_module") == ["configured the root logger"]
