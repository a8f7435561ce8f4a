"""The rule registry (issue 17 item 3): adding a rule is its function, its template and its tests.

A test-only rule is registered through the public registry with a template of its own; it fires, renders, is
recorded with its own version in what the audit keeps, and the start-up content check sees it; then it is removed.
The start-up check also refuses a rule reading an unknown engine option and a rule without a template. How its card
meets the others (silent for infants, cards it folds, R03's lab reminder it hosts: section 2.9, §8 C11) is declared
in its registration too, and takes effect with no list edited anywhere.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest

import cds_service.rules as rules_package
from cards.render import add_rule_template, remove_rule_template, templates
from cds_service.engine import check_content
from cds_service.hook_handler import hook_call_record
from cds_service.rules import (
    RULES,
    Finding,
    RuleContext,
    fold_hosts,
    order_rule_ids,
    r03_hosts,
    register,
    rule,
    unregister,
)
from cds_service.rules.base import ORDER_HOOKS, PATIENT_VIEW, RuleDef

from .builders import card, infant, outcome, run
from .patients import tp01, tp05

TEST_RULE = "test-phosphate-seen"
TEST_TEMPLATE = {
    "title": "Test rule: a phosphate result is on file",
    "summary": "Test card: phosphate {p} mg/dL on file",
    "detail": "{values_md}\n\n**Why this card:** a test-only rule saw a phosphate result.",
}


def _phosphate_seen(ctx: RuleContext) -> Finding | None:
    """Fires when the patient has a phosphate result; reads its declared option ``include_preliminary``."""
    p = ctx.state.phosphate
    if p is None:
        return None
    return Finding(rule_id=TEST_RULE, indicator="info",
                   fields={"p": f"{p.value:.1f}", "values_md": f"preliminary results used: {ctx.options}"},
                   evidence=[{"name": "phosphate", "value": p.value, "resource_id": p.reference}])


@pytest.fixture
def test_rule() -> Iterator[str]:
    rule(TEST_RULE, "T01", {PATIENT_VIEW}, fields={"p"}, version="9.9.9-test",
         options={"include_preliminary": False})(_phosphate_seen)
    add_rule_template(TEST_RULE, TEST_TEMPLATE)
    try:
        yield TEST_RULE
    finally:
        unregister(TEST_RULE)
        remove_rule_template(TEST_RULE)


def test_a_registered_rule_fires_renders_and_is_audited_with_its_own_version(test_rule: str) -> None:
    assert check_content() == []
    case = tp01()
    result = run(case["patient"], case["resources"])
    assert (test_rule, "info") in outcome(result)
    shown = card(result, test_rule)
    assert shown["summary"] == "Test card: phosphate 7.5 mg/dL on file"
    assert "{'include_preliminary': False}" in shown["detail"]   # the rule saw only its declared option
    assert (test_rule, "9.9.9-test") in result.rules_evaluated
    assessed = next(c for c in result.cards if c.rule_id == test_rule)
    assert assessed.rule_version == "9.9.9-test"
    record = hook_call_record("calcinosis-patient-view", PATIENT_VIEW, None, datetime.now(UTC), 200, None, None,
                              rules_evaluated=result.rules_evaluated)
    assert (test_rule, "9.9.9-test") in record.rules_evaluated
    # The other rules keep theirs.
    assert ("caxp-high", RULES["caxp-high"].version) in result.rules_evaluated


def test_option_given_to_the_rule_is_the_engine_value(test_rule: str) -> None:
    case = tp01()
    result = run(case["patient"], case["resources"], include_preliminary=True)
    assert "{'include_preliminary': True}" in card(result, test_rule)["detail"]


def test_removed_rule_is_gone(test_rule: str) -> None:
    unregister(test_rule)
    remove_rule_template(test_rule)
    case = tp01()
    assert test_rule not in {c.rule_id for c in run(case["patient"], case["resources"]).cards}
    assert check_content() == []


def test_unknown_option_fails_the_start_up_check() -> None:
    register(RuleDef(TEST_RULE, "T01", "1", frozenset({PATIENT_VIEW}), frozenset({"p"}), _phosphate_seen,
                     {"include_prelimnary": False}))
    add_rule_template(TEST_RULE, TEST_TEMPLATE)
    try:
        assert f"rule {TEST_RULE}: option include_prelimnary is not an engine option" in check_content()
    finally:
        unregister(TEST_RULE)
        remove_rule_template(TEST_RULE)


def test_option_of_the_wrong_type_fails_the_start_up_check() -> None:
    register(RuleDef(TEST_RULE, "T01", "1", frozenset({PATIENT_VIEW}), frozenset({"p"}), _phosphate_seen,
                     {"links_base_url": False}))
    add_rule_template(TEST_RULE, TEST_TEMPLATE)
    try:
        assert any("option links_base_url default False is not a str" in p for p in check_content())
    finally:
        unregister(TEST_RULE)
        remove_rule_template(TEST_RULE)


def test_rule_without_template_fails_the_start_up_check() -> None:
    rule(TEST_RULE, "T01", {PATIENT_VIEW}, fields={"p"}, version="1")(_phosphate_seen)
    try:
        assert f"rule {TEST_RULE}: no card template in cards/templates.toml" in check_content()
    finally:
        unregister(TEST_RULE)


def test_switch_must_be_a_declared_bool_option() -> None:
    with pytest.raises(ValueError, match="switch"):
        rule(TEST_RULE, "T01", {PATIENT_VIEW}, fields=(), version="1", switch="ctd_info_card")(_phosphate_seen)
    assert TEST_RULE not in RULES


def test_order_rules_come_from_the_registry() -> None:
    assert order_rule_ids() == {r for r, d in RULES.items() if d.hooks <= ORDER_HOOKS}
    assert "iv-calcium-order" in order_rule_ids()
    assert "caxp-high" not in order_rule_ids()


def test_every_rule_declares_its_own_version() -> None:
    assert all(d.version for d in RULES.values())


# --- how a card meets the others, declared in the registration (section 2.9, §8 C11) ------------------------------


@contextmanager
def registered(**declared: Any) -> Iterator[None]:
    """The test rule registered with ``declared`` attributes, its template showing what it folded."""
    rule(TEST_RULE, "T01", {PATIENT_VIEW}, fields={"p"}, version="1", **declared)(_phosphate_seen)
    add_rule_template(TEST_RULE, {**TEST_TEMPLATE, "detail": TEST_TEMPLATE["detail"] + "\n\n{folded_md}"})
    try:
        yield
    finally:
        unregister(TEST_RULE)
        remove_rule_template(TEST_RULE)


def test_a_rule_declared_silent_for_infants_does_not_run_under_one_year() -> None:
    case = tp01()
    with registered():
        assert (TEST_RULE, "info") in outcome(run(infant(6), case["resources"]))
    with registered(silent_for_infants=True):
        assert check_content() == []
        result = run(infant(6), case["resources"])
        assert TEST_RULE not in {r for r, _v in result.rules_evaluated}
        assert outcome(result) == []
        assert (TEST_RULE, "info") in outcome(run(case["patient"], case["resources"]))   # adults: it runs


def test_a_rule_declaring_folds_absorbs_that_card() -> None:
    case = tp01()
    alone = card(run(case["patient"], case["resources"]), "caxp-high")
    with registered(folds=("caxp-high",), fold_priority=9):
        assert check_content() == []
        assert fold_hosts()[0].rule_id == TEST_RULE      # the highest priority folds first
        result = run(case["patient"], case["resources"])
        shown = {r for r, _i in outcome(result)}
        # The caxp-high card is gone into the test card; what caxp-high itself would have folded or hosted
        # (hyperphosphatemia, the R03 reminder) now stands alone, as the declarations say.
        assert TEST_RULE in shown
        assert "caxp-high" not in shown
        host = card(result, TEST_RULE)
        assert templates().rules["caxp-high"]["title"] in host["detail"]      # "Also: ..." names the folded card
        assert [s["label"] for s in host["suggestions"]] == [s["label"] for s in alone["suggestions"]]
        evidence = next(c for c in result.cards if c.rule_id == TEST_RULE).evidence
        assert {e["name"] for e in evidence} >= {"calcium", "phosphate", "ca_x_p"}   # the folded card's facts


def test_a_rule_declaring_hosts_r03_takes_the_lab_reminder() -> None:
    case = tp05()   # only R03 (mineral labs due) fires
    reminder = card(run(case["patient"], case["resources"]), "mineral-labs-due")
    with registered():
        assert {r for r, _i in outcome(run(case["patient"], case["resources"]))} == {TEST_RULE, "mineral-labs-due"}
    with registered(hosts_r03=True):
        assert r03_hosts()[-1] == TEST_RULE
        result = run(case["patient"], case["resources"])
        assert [r for r, _i in outcome(result)] == [TEST_RULE]
        labels = [s["label"] for s in card(result, TEST_RULE)["suggestions"]]
        assert labels == [s["label"] for s in reminder["suggestions"]]


def test_the_declarations_name_registered_patient_view_rules() -> None:
    for definition in RULES.values():
        for folded in definition.folds:
            assert PATIENT_VIEW in RULES[folded].hooks, (definition.rule_id, folded)
        if definition.folds or definition.hosts_r03 or definition.silent_for_infants:
            assert PATIENT_VIEW in definition.hooks, definition.rule_id
    with pytest.raises(ValueError, match="itself"):
        rule(TEST_RULE, "T01", {PATIENT_VIEW}, fields=(), version="1", folds=(TEST_RULE,))(_phosphate_seen)
    assert TEST_RULE not in RULES
    # The hand-kept lists the registry replaced are gone (issue 17: adding a rule touches no list).
    assert not {"INFANT_SILENT", "FOLDS", "R03_HOSTS"} & set(vars(rules_package))
