"""docs/architecture.md stays true (issue 17 item 7): the files it names exist, its HTTP-layer list is the one
import-linter enforces, and the R24 walkthrough names the rule, template and tests that really exist."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from markdown_it import MarkdownIt

from cds_service.rules import RULES

REPO = Path(__file__).resolve().parents[2]
DOC = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
TOKENS = MarkdownIt("commonmark").enable("table").parse(DOC)


def _inline_code() -> set[str]:
    return {child.content for token in TOKENS if token.type == "inline" for child in token.children or []
            if child.type == "code_inline"}


def test_the_request_flow_and_the_package_graph_are_mermaid_pictures() -> None:
    fences = [token for token in TOKENS if token.type == "fence" and token.info.strip() == "mermaid"]
    assert len(fences) >= 2
    assert "flowchart" in fences[0].content


def test_every_file_the_doc_names_exists() -> None:
    # Paths are from the repository root, or (``audit/keys.py``, ``server.py``) inside cds_service/.
    paths = {code for code in _inline_code() if re.fullmatch(r"[\w./-]+(\.(py|toml|md|json)|/)", code)}
    assert len(paths) > 20
    missing = sorted(path for path in paths
                     if not (REPO / path).exists() and not (REPO / "cds_service" / path).exists())
    assert missing == []


def test_the_http_layer_named_is_the_one_import_linter_enforces() -> None:
    with (REPO / "pyproject.toml").open("rb") as handle:
        contracts = tomllib.load(handle)["tool"]["importlinter"]["contracts"]
    (protected,) = [c for c in contracts if c["type"] == "protected"]
    section = DOC[DOC.index("**The HTTP layer**"):DOC.index("These rules are not just written down")]
    named = {path.removesuffix(".py").replace("/", ".").removesuffix(".__init__")
             for path in re.findall(r"`(cds_service/[\w/]+\.py)`", section)}
    assert named == set(protected["allowed_importers"])


def test_the_r24_walkthrough_names_what_exists() -> None:
    walkthrough = DOC[DOC.index("## Adding a rule"):]
    assert "warfarin-calciphylaxis-risk" in RULES
    assert RULES["warfarin-calciphylaxis-risk"].fn.__name__ in walkthrough
    templates = tomllib.loads((REPO / "cards" / "templates.toml").read_text(encoding="utf-8"))
    assert "warfarin-calciphylaxis-risk" in templates["rules"]
    assert templates["rules"]["warfarin-calciphylaxis-risk"]["override_reasons"] in walkthrough
    tests = (REPO / "tests" / "engine" / "test_revision2_boundaries.py").read_text(encoding="utf-8")
    named_tests = set(re.findall(r"`(test_c16_\w+)`", walkthrough))
    assert named_tests
    assert all(f"def {name}(" in tests for name in named_tests)
    rule_source = (REPO / "cds_service" / "rules" / "order_rules.py").read_text(encoding="utf-8")
    assert "def warfarin_calciphylaxis_risk(" in rule_source
    keys = set(re.findall(r"`((?:r24|consult)_\w+)`", walkthrough))
    template_text = (REPO / "cards" / "templates.toml").read_text(encoding="utf-8")
    assert keys
    assert all(re.search(rf"^{key} = ", template_text, re.MULTILINE) and f'"{key}"' in rule_source for key in keys)


def test_the_readme_links_to_it() -> None:
    assert "(docs/architecture.md)" in (REPO / "README.md").read_text(encoding="utf-8")
