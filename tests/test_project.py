"""The project's promises about itself: layout, README commands, CI script, and the three
rooms of the house (library, command line, app) with arrows only downward."""

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", text, re.S)
    return [line.strip() for block in blocks[:2] for line in block.splitlines() if line.strip()]


def test_layout_users_expect():
    for path in ["gandissect", "gandissect/app", "gandissect/cli", "models/README.md", "tests",
                 "benchmarks", "docs/results.md", "docs/operations.md", "docs/models.md",
                 "pyproject.toml", "README.md", ".ci/run"]:
        assert (ROOT / path).exists(), path
    assert not (ROOT / "app").exists() and not (ROOT / "scripts").exists()


def test_the_wheel_installs_one_top_level_package():
    text = (ROOT / "pyproject.toml").read_text()
    listed = re.search(r"^packages = \[(.*?)\]", text, re.S | re.M).group(1)
    packages = re.findall(r'"([\w.]+)"', listed)
    assert packages and {name.split(".")[0] for name in packages} == {"gandissect"}


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports (absolute names; relative imports resolved)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            found |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    return found


def room(module: str) -> str | None:
    """``cli``, ``app`` or ``library`` for a module of the package, None for anything else."""
    parts = module.split(".")
    if parts[0] != "gandissect":
        return None
    return parts[1] if len(parts) > 1 and parts[1] in ("cli", "app") else "library"


def test_arrows_only_downward_between_library_command_line_and_app():
    """The library imports neither the command line nor the app; the app never imports the
    command line; the command line imports the app only to start it (``cli/app.py``).
    ``gandissect/app/__main__.py`` is the entry point above both (``python -m gandissect.app``
    hands its options to the ``app`` command)."""
    allowed = {("library", "library"), ("cli", "library"), ("cli", "cli"), ("app", "library"),
               ("app", "app")}
    for path in sorted((ROOT / "gandissect").rglob("*.py")):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        if name in ("gandissect.app.__main__", "gandissect.__main__"):
            continue
        for imported in imported_modules(path):
            arrow = (room(name), room(imported))
            if None in arrow or arrow in allowed:
                continue
            assert arrow == ("cli", "app") and name == "gandissect.cli.app", (
                f"{name} imports {imported}: {arrow[0]} -> {arrow[1]}")


def test_help_loads_no_torch():
    """``gandissect --help`` and every command's help answer without importing torch (their
    time: ``python benchmarks/bench_cli_help.py``)."""
    script = (
        "import sys\n"
        "from gandissect.cli import build_parser, main\n"
        "from gandissect.cli import _subparsers\n"
        "commands = [[]] + [sub.prog.split()[1:] for sub in _subparsers(build_parser())]\n"
        "for command in commands:\n"
        "    try:\n"
        "        main([*command, '--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = sorted(m for m in ('torch', 'numpy', 'gradio', 'PIL') if m in sys.modules)\n"
        "print(len(commands), heavy, file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True)
    count, heavy = done.stderr.strip().split(" ", 1)
    assert int(count) >= 15 and heavy == "[]", done.stderr


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
