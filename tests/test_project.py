"""The project's promises about itself: layout, README commands, CI script."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", text, re.S)
    return [line.strip() for block in blocks[:2] for line in block.splitlines() if line.strip()]


def test_layout_users_expect():
    for path in ["gandissect", "app", "models/README.md", "tests", "benchmarks",
                 "pyproject.toml", "README.md", ".ci/run"]:
        assert (ROOT / path).exists(), path


def test_ci_runs_exactly_the_readme_test_command():
    install_and_run, install_and_test = readme_commands()[:2]
    ci = (ROOT / ".ci/run").read_text().splitlines()
    assert install_and_test in [line.strip() for line in ci], (
        "the README's test command and .ci/run disagree"
    )
    assert "gandissect" in install_and_run


def test_no_eval_of_strings_and_no_hard_coded_cuda():
    for path in (ROOT / "gandissect").rglob("*.py"):
        source = path.read_text()
        assert not re.search(r"(?<![\w.])eval\(", source), f"eval in {path}"
        assert ".cuda()" not in source and '"cuda:0"' not in source, f"hard-coded device in {path}"


def test_every_package_is_listed_for_installation():
    """pyproject lists packages explicitly (models/ installs as gandissect.shipped)."""
    text = (ROOT / "pyproject.toml").read_text()
    for init in (ROOT / "gandissect").rglob("__init__.py"):
        package = ".".join(init.parent.relative_to(ROOT).parts)
        assert f'"{package}"' in text, f"add {package} to [tool.setuptools] packages"
