"""Priority levels and get_priority / priority_name."""

from __future__ import annotations

from typing import Any

import pytest

from pluginloop import Priority, get_priority
from pluginloop.priority import priority_name

LEVELS = {
    "HIGHEST": 0,
    "VERY_HIGH": 10,
    "HIGH": 30,
    "ABOVE_NORMAL": 40,
    "NORMAL": 50,
    "BELOW_NORMAL": 60,
    "LOW": 70,
    "VERY_LOW": 90,
    "LOWEST": 100,
}


def assert_lists_all_names(message: str) -> None:
    for name in LEVELS:
        assert name in message, f"{name} missing from: {message}"


def test_nine_levels_with_their_values_in_order() -> None:
    assert {p.name: p.value for p in Priority} == LEVELS
    assert [p.name for p in Priority] == list(LEVELS)


@pytest.mark.parametrize("member", list(Priority))
def test_member_gives_its_value(member: Priority) -> None:
    value = get_priority(member)
    assert value == LEVELS[member.name]
    assert type(value) is int


@pytest.mark.parametrize("spelling", ["high", "HIGH", "High", " high ", "hIgH"])
def test_names_are_case_insensitive(spelling: str) -> None:
    assert get_priority(spelling) == 30


@pytest.mark.parametrize("name", list(LEVELS))
def test_every_name_reads(name: str) -> None:
    assert get_priority(name.lower()) == LEVELS[name]


@pytest.mark.parametrize("value", [0, 1, 37, 50, 99, 100])
def test_ints_in_range_are_taken_as_is(value: int) -> None:
    assert get_priority(value) == value


@pytest.mark.parametrize("bad", ["HIGHER", "very high", "", "normal!", "50"])
def test_unknown_name_lists_the_nine_names(bad: str) -> None:
    with pytest.raises(ValueError, match="unknown priority") as info:
        get_priority(bad)
    assert_lists_all_names(str(info.value))


@pytest.mark.parametrize("bad", [-1, 101, 1000, -100])
def test_out_of_range_int_is_refused(bad: int) -> None:
    with pytest.raises(ValueError, match="out of range") as info:
        get_priority(bad)
    assert_lists_all_names(str(info.value))


@pytest.mark.parametrize("bad", [True, False])
def test_bool_is_not_a_priority(bad: bool) -> None:
    with pytest.raises(TypeError) as info:
        get_priority(bad)
    assert_lists_all_names(str(info.value))


@pytest.mark.parametrize("bad", [30.0, None, [30], {"priority": 30}, b"HIGH"])
def test_wrong_type_is_refused(bad: Any) -> None:
    with pytest.raises(TypeError) as info:
        get_priority(bad)
    assert_lists_all_names(str(info.value))
    assert type(bad).__name__ in str(info.value)


def test_priority_name_names_levels_and_numbers_between() -> None:
    assert priority_name(30) == "HIGH"
    assert priority_name(Priority.LOWEST) == "LOWEST"
    assert priority_name(45) == "45"


def test_lower_value_is_earlier() -> None:
    assert sorted(Priority, key=get_priority) == list(Priority)
