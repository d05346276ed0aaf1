"""docs/rules.md lists every registered rule kind, as `safecity.docs_gen` generates it from the registry."""

from __future__ import annotations

import io
import re
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from safecity import docs_gen
from safecity.warning.rules import kind_keys

DOC = Path(__file__).resolve().parents[2] / "docs" / "rules.md"
BLOCK = re.compile(r"<!-- generated:rule-kinds -->\n(.*?)<!-- /generated:rule-kinds -->", flags=re.S)


def test_rules_doc_lists_the_registered_kinds_as_generated() -> None:
    found = BLOCK.search(DOC.read_text(encoding="utf-8"))
    assert found is not None, "docs/rules.md lacks the generated rule-kinds block"
    assert found.group(1) == docs_gen.rule_kinds_reference(), (
        "docs/rules.md is stale: uv run python -m safecity.docs_gen --write rule-kinds"
    )


def test_the_table_has_one_row_a_kind_with_its_windows() -> None:
    rows = re.findall(
        r"^\| \[`(\w+)`\]\(#\w+\) \| .* \| (.*) \| .* \| `(.*)` \|$", docs_gen.rule_kinds_reference(), re.M
    )
    assert [kind for kind, _, _ in rows] == sorted(kind_keys())
    by_kind = {kind: (windows, module) for kind, windows, module in rows}
    assert by_kind["threshold"] == ("`within`, `hold`", "safecity.warning.kinds.threshold")
    assert by_kind["hotlist"][0] == "none"


def test_fill_block_replaces_only_the_block_and_refuses_a_page_without_it() -> None:
    page = "a\n<!-- generated:x -->\nold\n<!-- /generated:x -->\nb\n"
    assert docs_gen.fill_block(page, "x", "new\n") == "a\n<!-- generated:x -->\nnew\n<!-- /generated:x -->\nb\n"
    with pytest.raises(ValueError, match="generated:y"):
        docs_gen.fill_block(page, "y", "new\n")


def test_main_prints_the_block_and_write_needs_a_block_generator() -> None:
    out = io.StringIO()
    with redirect_stdout(out):
        assert docs_gen.main(["rule-kinds"]) == 0
    assert out.getvalue() == docs_gen.rule_kinds_reference()
    assert docs_gen.main(["--write", "events"]) == 2
