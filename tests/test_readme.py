"""The README's two set-up commands stay true: CI runs the second verbatim; the first uses real parts."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands():
    return re.findall(r"```bash\n(.+?)\n```", (ROOT / "README.md").read_text())[:2]


def test_ci_runs_the_readme_test_command():
    main_cmd, test_cmd = readme_commands()
    ci_lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
                if line and not line.startswith(("#", "set ", "cd "))]
    assert ci_lines == [test_cmd]


def test_main_command_predicts_a_committed_photo_with_the_packaged_model():
    main_cmd, _ = readme_commands()
    photo = re.search(r"agekit predict (\S+)$", main_cmd).group(1)
    assert (ROOT / photo).is_file()
    assert (ROOT / "agekit" / "weights" / "agekit-default.onnx").is_file()
    assert (ROOT / "agekit" / "weights" / "MODEL_CARD.md").is_file()
