"""The formula verifier: exact values, only numbers and + - * / ( ), and no input that crashes it or runs code."""

from __future__ import annotations

import time
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from healer.tasks.formula import MAX_CHARS, Formula, IllegalFormula, extract, format_value, parse


def test_exact_arithmetic_accepts_what_floats_get_wrong() -> None:
    assert parse("8/(3-8/3)") == Formula("8/(3-8/3)", (8, 3, 8, 3), Fraction(24))
    assert 8 / (3 - 8 / 3) != 24  # the paper's float checker rejected this correct solution


@pytest.mark.parametrize(
    ("text", "expression", "value"),
    [
        ("8/(3-8/3)=24", "8/(3-8/3)", 24),
        ("8/(3-8/3) = 24", "8/(3-8/3)", 24),
        (" (1+5) * (10-6) =", "(1+5) * (10-6)", 24),
        ("3*8 = 20", "3*8", 24),  # a wrong stated result is ignored: the formula is judged by its value
        ("\t10 - 4\t", "10 - 4", 6),
        ("(((7)))", "(((7)))", 7),
        ("0", "0", 0),
    ],
)
def test_trailing_result_and_spaces_are_dropped(text: str, expression: str, value: int) -> None:
    parsed = parse(text)
    assert (parsed.text, parsed.value) == (expression, Fraction(value))


def test_numbers_are_listed_in_reading_order() -> None:
    assert parse("13-(12-11)*1").numbers == (13, 12, 11, 1)


def test_division_by_zero_is_a_value_of_none_not_a_crash() -> None:
    assert parse("1/0").value is None
    assert parse("8/(3-3)*8+3").value is None
    assert parse("8/(3-3)*8+3").numbers == (8, 3, 3, 8, 3)


HOSTILE = {
    "name": "x+1",
    "call": "abs(1)",
    "import": "__import__('os').system('echo pwned')",
    "attribute": "(1).__class__",
    "power": "2**3",
    "huge power": "9**9**9**9",
    "floor division": "8//3",
    "modulo": "8%3",
    "comparison": "3<4",
    "float": "1.5",
    "exponent": "1e5",
    "complex": "1j",
    "string": "'24'",
    "bool": "True",
    "huge literal": "123456789",
    "underscore literal": "1_0",
    "hex": "0x18",
    "leading zero": "024",
    "unary minus": "-3+27",
    "unary plus": "+24",
    "call by juxtaposition": "(1)(2)",
    "tuple": "(1,2)",
    "empty": "",
    "empty parentheses": "()",
    "spaces only": "   ",
    "unbalanced open": "((1+2)",
    "unbalanced close": "(1+2))",
    "deep nesting": "(" * 5000 + "1" + ")" * 5000,
    "moderate nesting": "(" * 17 + "1" + ")" * 17,
    "megabyte": "1+" * 500_000 + "1",
    "long": "1+" * (MAX_CHARS // 2) + "1",
    "fullwidth digits": "２４",
    "arabic-indic digits": "٢٤",
    "superscript": "2²",
    "two equals": "3*8=24=24",
    "equals in front": "24=3*8",
    "equals with words": "3*8 = twenty-four",
    "newline": "3*\n8",
    "lambda": "lambda: 1",
    "walrus": "(x:=1)",
    "null byte": "1\x00+2",
}


@pytest.mark.parametrize("text", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_input_is_illegal_quickly(text: str) -> None:
    start = time.perf_counter()
    with pytest.raises(IllegalFormula) as info:
        parse(text)
    assert time.perf_counter() - start < 0.5
    assert str(info.value) and "\n" not in str(info.value)


def test_nesting_within_the_bound_is_legal() -> None:
    assert parse("(" * 16 + "24" + ")" * 16).value == 24


@pytest.mark.parametrize(
    ("completion", "formula"),
    [
        ('{"cards": ["3", "3", "8", "8"], "number": [3, 3, 8, 8], "formula": "8/(3-8/3)=24"}', "8/(3-8/3)=24"),
        ("Sure!\n{\n  'cards': ['A'],\n  'formula': '(1+5)*4',\n}\nDone.", "(1+5)*4"),
        ('{"formula": 24}', "24"),
        ('{"note": "a { brace", "formula": "3*8"}', "3*8"),
        ('{"cards": [1, 2} then "formula": "1+2" later', "1+2"),
        ("I think the formula: (10-4)*4 works", "(10-4)*4"),
        ("Let me think.\n(10-4)*4\n", "(10-4)*4"),
        ("```\n3*8\n```", "3*8"),
        ("(1+5)*(", "(1+5)*("),
    ],
)
def test_the_formula_is_found_json_first_then_tolerantly(completion: str, formula: str) -> None:
    assert extract(completion) == formula


@pytest.mark.parametrize("completion", ["", "no idea", '{"cards": ["A"]}', "{{{{", "formula:"])
def test_answers_without_a_formula_give_none(completion: str) -> None:
    assert extract(completion) is None


def test_format_value() -> None:
    assert (format_value(Fraction(24)), format_value(Fraction(20, 3)), format_value(Fraction(-1, 2))) == (
        "24",
        "20/3",
        "-1/2",
    )


FORMULA_ALPHABET = "0123456789+-*/() =\t"


def _judge_safely(text: str) -> None:
    try:
        parsed = parse(text)
    except IllegalFormula:
        return
    assert all(0 <= n < 10_000 for n in parsed.numbers)


@given(st.text(max_size=300))
def test_random_text_never_raises_anything_but_illegal(text: str) -> None:
    _judge_safely(text)
    extract(text)


@given(st.text(alphabet=FORMULA_ALPHABET, max_size=60))
def test_formula_shaped_text_never_raises_anything_but_illegal(text: str) -> None:
    _judge_safely(text)
    found = extract(text)
    if found is not None:
        _judge_safely(found)


def _trees(depth: int) -> st.SearchStrategy[tuple[str, Fraction | None]]:
    """Random formulas, fully parenthesised, with their value computed independently (None on division by zero)."""
    leaf = st.integers(0, 9999).map(lambda n: (str(n), Fraction(n)))
    if depth == 0:
        return leaf
    sub = _trees(depth - 1)
    return st.one_of(leaf, st.tuples(sub, st.sampled_from("+-*/"), sub).map(_combine))


def _combine(parts: tuple) -> tuple[str, Fraction | None]:
    (left, a), op, (right, b) = parts
    if a is None or b is None or (op == "/" and b == 0):
        value = None
    else:
        value = {"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else None}[op]
    return f"({left}{op}{right})", value


@settings(max_examples=300)
@given(_trees(4))
def test_values_match_an_independent_evaluation(tree: tuple[str, Fraction | None]) -> None:
    text, value = tree
    if len(text) > MAX_CHARS:
        return  # depth 4 keeps nesting within the bound; only the length can exceed it
    assert parse(text).value == value
