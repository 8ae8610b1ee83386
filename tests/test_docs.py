"""The README's rule reference is generated from the rule schemas; keep them equal.

Regenerate with: forge rules --markdown (and paste between the markers in README.md).
"""

from pathlib import Path

from click.testing import CliRunner

from forge.cli import main

README = Path(__file__).parents[1] / "README.md"
BEGIN, END = "<!-- rules:begin -->", "<!-- rules:end -->"


def test_readme_rule_reference_matches_the_schemas():
    text = README.read_text()
    assert BEGIN in text and END in text, "README.md lacks the rule reference markers"
    documented = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    result = CliRunner().invoke(main, ["-C", str(README.parent), "rules", "--markdown"])
    assert result.exit_code == 0, result.output
    assert documented == result.output.strip(), "README rule reference is stale: run `forge rules --markdown`"


def test_readme_starts_with_the_two_commands():
    head = README.read_text().split("## Concepts")[0]
    assert "scripts/quickstart.sh" in head and "scripts/test.sh" in head
    assert "scripts/test.sh" in (README.parent / ".ci/run").read_text()
