"""The README's two commands stay true: CI runs the test command verbatim."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def fenced(text: str) -> list[str]:
    return [block.strip() for block in re.findall(r"```sh\n(.*?)```", text, re.S)]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    blocks = fenced(readme.split("## Test it", 1)[1])
    assert blocks, "README has no test command"
    assert blocks[0] in ci


def test_readme_run_command_starts_the_lab():
    readme = (ROOT / "README.md").read_text()
    run = fenced(readme.split("## Run it", 1)[1])[0]
    assert "apt-get install" in run and "qemu-system-x86" in run
    assert run.endswith("migtui lab")
