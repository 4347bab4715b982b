"""The shared Markdown-table writer and machine description."""
import pytest

from agekit import machine, markdown


def test_table_escapes_pipes_and_newlines_and_rejects_ragged_rows():
    text = markdown.table(["a", "b"], [[1, "x|y"], ["two\nlines", 2.5]])
    assert text == "| a | b |\n|---|---|\n| 1 | x\\|y |\n| two lines | 2.5 |"
    with pytest.raises(ValueError, match="row has 1 cells, the table has 2 columns"):
        markdown.table(["a", "b"], [[1]])


def test_machine_description_names_the_cpu_and_cores():
    info = machine.describe()
    assert info["cpu"] and info["cpu"] != "unknown" and info["cores"] >= 1
    assert set(info["cpu_flags"].split()) <= set(machine.cpu_flags())
