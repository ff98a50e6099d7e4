"""The function claim's `*` patterns: whole-ref matches, `*` any run of characters."""

import pytest

from fwatchdog.auth.patterns import matches, may_invoke


@pytest.mark.parametrize(
    ("pattern", "ref", "expected"),
    [
        ("*", "openfaas-fn:env", True),
        ("openfaas-fn:env", "openfaas-fn:env", True),
        ("openfaas-fn:env", "openfaas-fn:env2", False),
        ("ns1:*", "ns1:fn1", True),
        ("ns1:*", "ns10:fn1", False),  # anchored: the unanchored Go pattern let this through
        ("ns1", "ns10:fn1", False),
        ("ns*:fn1", "ns1:fn1", True),
        ("ns*:fn1", "ns1:fn10", False),
        ("*:fn1", "any:fn1", True),
        ("ns1:fn*", "ns1:fn", True),  # * matches nothing too
        ("a.b:*", "axb:fn", False),  # regular expression characters are literal
        ("ns1:f*n*1", "ns1:fxxnyy1", True),
        ("", "ns1:fn1", False),
    ],
)
def test_patterns_match_the_whole_ref(pattern: str, ref: str, expected: bool) -> None:
    assert matches(pattern, ref) is expected


def test_permissions_are_required_and_audience_restricts_only_when_given() -> None:
    assert may_invoke(["ns1:*"], [], "ns1:fn1")
    assert not may_invoke([], [], "ns1:fn1")
    assert not may_invoke([], ["*"], "ns1:fn1")
    assert may_invoke(["*"], ["ns1:fn1", "ns2:*"], "ns1:fn1")
    assert not may_invoke(["*"], ["ns2:*"], "ns1:fn1")
    assert not may_invoke(["ns2:*"], ["*"], "ns1:fn1")
