"""The one registry shape shared by backbones, methods, dataset readers and detectors."""
import sys

import pytest

from agekit.errors import AgekitError
from agekit.registry import Registry


def test_register_get_names_info_and_mapping_reads():
    r = Registry("widget")
    r.register("b", 2, description="two")

    @r.register("a", description="one")
    def make_a():
        return 1

    assert r.get("a") is make_a and r["b"] == 2
    assert r.names() == ["a", "b"] and list(r) == ["a", "b"] and len(r) == 2 and "a" in r and "c" not in r
    assert r.info("b") == {"description": "two"}
    with pytest.raises(AgekitError, match=r"unknown widget 'c'; known: a, b"):
        r.get("c")
    with pytest.raises(AgekitError, match="unknown widget"):
        r.info("c")
    with pytest.raises(ValueError, match="already registered"):
        r.register("a", 3)
    r.register("a", 3, replace=True)
    assert r["a"] == 3


def test_lazy_entries_import_on_first_get_only(tmp_path, monkeypatch):
    (tmp_path / "agekit_lazy_probe.py").write_text("VALUE = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    r = Registry("thing")
    r.register("x", "agekit_lazy_probe:VALUE")
    assert r.names() == ["x"] and "agekit_lazy_probe" not in sys.modules
    assert r.get("x") == 42 and "agekit_lazy_probe" in sys.modules


def test_fill_module_registers_the_built_ins_on_first_use(tmp_path, monkeypatch):
    (tmp_path / "agekit_fill_probe.py").write_text(
        "from agekit_fill_probe_reg import R\nR.register('built-in', 'yes')\n")
    (tmp_path / "agekit_fill_probe_reg.py").write_text(
        "from agekit.registry import Registry\nR = Registry('thing', fill='agekit_fill_probe')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from agekit_fill_probe_reg import R

    assert "agekit_fill_probe" not in sys.modules
    assert R.names() == ["built-in"] and R["built-in"] == "yes"
