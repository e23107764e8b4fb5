"""The README's emulator example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def _section() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("<!-- section: emulator -->")
    end = text.index("\n## ", start)
    return text[start:end]


def test_readme_emulator_example_runs() -> None:
    blocks = re.findall(r"```python\n(.*?)```", _section(), re.DOTALL)
    example = next(b for b in blocks if "with Emulator(" in b)
    exec(compile(example, "README.md (emulator section)", "exec"), {})  # noqa: S102


def test_readme_lists_every_checklist_code() -> None:
    from test_emulator_checklist import CASES

    section = _section()
    for case in CASES:
        assert str(case.code) in section, case.id
    for code in ("500011", "AADB2C99027"):
        assert code in section
