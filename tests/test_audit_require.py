"""model_card.require: the requirement grammar of `lucie audit --require` and publish.require.

Unit tests on card dicts shaped as render.audit returns them; the end-to-end gate (exit codes on
real inputs) is in test_audit_cli.py."""
from __future__ import annotations

import pytest

from model_card.require import RequirementError, failures, parse


def card(compliant=True, mof_class=1, color="green", score=0.8):
    labels = {0: "Unclassified", 1: "Class I - Open Science Model", 2: "Class II - Open Tooling Model",
              3: "Class III - Open Model"}
    return {
        "osaid": {"compliant": compliant,
                  "failures": [] if compliant else [{"element": "code", "why": "not released: Training code"},
                                                     {"element": "freedoms", "why": "llama3"}]},
        "mof": {"class": mof_class, "label": labels[mof_class]},
        "nextcloud": {"color": color},
        "osai_index": {"score": score},
    }


@pytest.mark.parametrize("text, want", [
    ("osaid", ("osaid", None)),
    ("  OSAID ", ("osaid", None)),
    ("mof-class=1", ("mof-class", "1")),
    ("mof-class=3", ("mof-class", "3")),
    ("nextcloud=yellow", ("nextcloud", "yellow")),
    ("Nextcloud=GREEN", ("nextcloud", "green")),
    ("osai-index>=0.5", ("osai-index", "0.5")),
    ("osai-index>=1", ("osai-index", "1")),
    ("osai-index>=0", ("osai-index", "0")),
])
def test_the_grammar_accepts(text, want):
    assert parse(text) == want


@pytest.mark.parametrize("text, says", [
    ("", "unknown requirement"),
    ("mof", "unknown requirement"),
    ("mof-clas=1", "unknown requirement"),
    ("osaid=true", "takes no value"),
    ("mof-class", "takes ="),
    ("mof-class>=1", "takes ="),
    ("mof-class=0", "classes are 1, 2 or 3"),
    ("mof-class=4", "classes are 1, 2 or 3"),
    ("mof-class=I", "classes are 1, 2 or 3"),
    ("nextcloud=blue", "colours are"),
    ("nextcloud>=green", "takes ="),
    ("osai-index=0.5", "takes >="),
    ("osai-index>=1.5", "a number in [0, 1]"),
    ("osai-index>=-0.1", "a number in [0, 1]"),
    ("osai-index>=nan", "a number in [0, 1]"),
    ("osai-index>=high", "a number in [0, 1]"),
])
def test_the_grammar_refuses_with_a_reason(text, says):
    with pytest.raises(RequirementError, match="requirement") as err:
        parse(text)
    assert says in str(err.value)


def test_a_typo_is_an_error_not_a_passing_gate():
    # Even on a card that meets everything: an unknown requirement must never be skipped silently.
    with pytest.raises(RequirementError):
        failures(card(), ["osaid", "mof_class=1"])


def test_all_requirements_met_gives_no_failure():
    assert failures(card(), ["osaid", "mof-class=1", "nextcloud=green", "osai-index>=0.8"]) == []
    assert failures(card(), []) == []


def test_osaid_failure_names_the_failing_elements():
    assert failures(card(compliant=False), ["osaid"]) == ["osaid: not compliant (failing: code, freedoms)"]


@pytest.mark.parametrize("got, required, fails", [
    (1, "1", False), (1, "3", False), (2, "3", False), (2, "2", False),
    (2, "1", True), (3, "2", True), (3, "1", True), (3, "3", False),
    (0, "3", True), (0, "1", True),  # unclassified never passes
])
def test_mof_class_is_this_class_or_more_open(got, required, fails):
    out = failures(card(mof_class=got), [f"mof-class={required}"])
    assert bool(out) == fails
    if fails:
        assert out[0].startswith(f"mof-class={required}: release is ")
        assert ("unclassified" in out[0]) == (got == 0)


@pytest.mark.parametrize("got, required, fails", [
    ("green", "green", False), ("green", "red", False), ("yellow", "green", True), ("yellow", "yellow", False),
    ("orange", "yellow", True), ("red", "orange", True), ("red", "red", False),
])
def test_nextcloud_is_this_colour_or_better(got, required, fails):
    out = failures(card(color=got), [f"nextcloud={required}"])
    assert out == ([f"nextcloud={required}: release is {got}"] if fails else [])


def test_osai_index_threshold_is_inclusive():
    assert failures(card(score=0.5), ["osai-index>=0.5"]) == []
    assert failures(card(score=0.49), ["osai-index>=0.5"]) == ["osai-index>=0.5: score is 0.490"]
    assert failures(card(score=0.0), ["osai-index>=0"]) == []


def test_each_failing_requirement_is_one_line_in_order():
    out = failures(card(compliant=False, mof_class=3, color="orange", score=0.25),
                   ["nextcloud=yellow", "osaid", "osai-index>=0.3", "mof-class=2"])
    assert [line.split(":")[0] for line in out] == ["nextcloud=yellow", "osaid", "osai-index>=0.3", "mof-class=2"]
    assert out[2] == "osai-index>=0.3: score is 0.250"
    assert out[3] == "mof-class=2: release is Class 3 (Class III - Open Model)"
