"""The emulator page's example runs as written (docs/emulator.md)."""

from __future__ import annotations

import re

from _docs import section


def _section() -> str:
    return section("emulator")


def test_readme_emulator_example_runs() -> None:
    blocks = re.findall(r"```python\n(.*?)```", _section(), re.DOTALL)
    example = next(b for b in blocks if "with Emulator(" in b)
    exec(compile(example, "docs/emulator.md", "exec"), {})  # noqa: S102


def test_readme_lists_every_checklist_code() -> None:
    from test_emulator_checklist import CASES

    section = _section()
    for case in CASES:
        assert str(case.code) in section, case.id
    for code in ("500011", "AADB2C99027"):
        assert code in section
