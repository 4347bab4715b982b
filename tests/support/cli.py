"""Running the `agekit` command in-process, as a user would from a shell."""
from agekit.cli import main


def run_cli(capsys, *argv):
    """(exit code, stdout, stderr) of `agekit ARGV...`; argparse's usage errors give their exit code too."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err
