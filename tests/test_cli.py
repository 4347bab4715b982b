"""CLI behaviour for users: one-line errors, exit codes, no tracebacks."""
import subprocess
import sys

import pytest

from agekit.cli import main


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("argv,needle", [
    (["train", "nope.yaml"], "config file not found: nope.yaml"),
    (["train", "no_such_packaged_config"], "no config file or packaged config named"),
    (["train", "train.lrr=3"], "unknown config key 'train.lrr'"),
    (["train", "data.root=/definitely/missing", "data.dataset=utkface"], "/definitely/missing"),
    (["eval", "missing.pt"], "checkpoint not found: missing.pt"),
])
def test_user_errors_are_one_line(capsys, argv, needle):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert needle in err and err.startswith("agekit: error:")
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_failed_run_leaves_no_run_directory(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", f"data.root={tmp_path / 'missing'}", f"run_dir={tmp_path / 'run'}")
    assert code == 2 and "missing" in err
    assert not (tmp_path / "run").exists()


def test_not_a_checkpoint(capsys, tmp_path):
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"garbage")
    code, _, err = run_cli(capsys, "eval", str(bad))
    assert code == 2 and "not a readable checkpoint" in err


def test_methods_and_configs_are_listed(capsys):
    code, out, _ = run_cli(capsys, "methods")
    assert code == 0 and "dldl_v2" in out and "regression" in out and "IJCAI 2018" in out
    code, out, _ = run_cli(capsys, "train", "--list-configs")
    assert code == 0 and "utkface_quick" in out


def test_console_entry_point_exits_nonzero_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "agekit", "eval", str(tmp_path / "x.pt")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "checkpoint not found" in proc.stderr
