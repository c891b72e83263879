"""The README's quick start is the project's set-up: CI must run its test command verbatim."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def quick_start_commands():
    text = (ROOT / "README.md").read_text()
    block = text.split("## Quick start", 1)[1].split("```", 2)[1]
    return [line for line in block.splitlines() if line.strip() and not line.startswith(("#", "bash", "sh"))]


def test_ci_runs_the_readme_test_command_verbatim():
    commands = quick_start_commands()
    assert len(commands) == 2, commands
    assert "selfdev demo" in commands[0]
    assert "pytest" in commands[1]
    ci = (ROOT / ".ci" / "run").read_text()
    assert commands[1] in ci.splitlines()


def test_install_pins_the_cpu_torch_in_the_same_command():
    for command in quick_start_commands():
        assert "torch==2.13.0" in command and "pip install" in command
