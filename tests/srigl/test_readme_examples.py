"""The README's library examples run as written: "Your own model with a fixed fan-in, or N:M"."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "### Your own model with a fixed fan-in, or N:M"


def _examples() -> list[str]:
    text = README.read_text()
    start = text.index(SECTION)
    end = text.index("\n#", start + len(SECTION))
    return re.findall(r"```python\n(.*?)```", text[start:end], flags=re.DOTALL)


def test_the_section_holds_the_fixed_fan_in_and_the_n_m_examples():
    examples = _examples()
    assert len(examples) == 2
    assert "fan_in=16" in examples[0] and "n_m=(2, 4)" in examples[1]


@pytest.mark.parametrize("index", [0, 1], ids=["fan_in", "n_m"])
def test_a_readme_example_runs_and_prints_what_its_comment_says(index, capsys):
    import torch

    torch.manual_seed(0)
    code = _examples()[index]
    exec(compile(code, f"README.md example {index}", "exec"), {"__name__": "readme"})
    printed = capsys.readouterr().out.strip()
    expected = re.search(r"print\(.*\)\s+# (\S+(?: \S+)*?)(?: =|$)", code, flags=re.M).group(1)
    assert printed == expected
