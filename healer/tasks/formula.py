"""Card-game formulas: find one in a model's answer, then parse and evaluate it exactly and safely."""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from fractions import Fraction

# Bounds checked on the raw text before `ast.parse` sees it, so no input can make the parser or the evaluator
# recurse deeply, allocate much, or run for long.
MAX_CHARS = 200
MAX_DEPTH = 16  # nested parentheses; a 6-card formula needs at most 4
MAX_DIGITS = 4  # integer literals up to 9999: cards are at most 13, larger numbers are wrong numbers, not illegal
ALLOWED = frozenset("0123456789+-*/() \t")
OPERATORS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
STATED = re.compile(r"\s*\d*\s*")  # what may follow a trailing "=": nothing or the stated number


class IllegalFormula(ValueError):
    """The text is not a formula of integers, + - * / and parentheses; the message says why, in words."""


@dataclass(frozen=True)
class Formula:
    """A legal formula: its expression (any trailing `= N` removed), its integer literals in order, its value.

    `value` is None when the formula divides by zero.
    """

    text: str
    numbers: tuple[int, ...]
    value: Fraction | None


def parse(text: str) -> Formula:
    """Parse and evaluate `text` exactly; raise IllegalFormula for anything but numbers, + - * / and parentheses.

    Unary minus and plus are illegal: no card formula needs them, and allowing them would let `-(a-b)` stand in
    for `b-a`. A trailing `= N` (or `=`) is dropped and N ignored: the formula is judged by its value.
    """
    if len(text) > MAX_CHARS:
        raise IllegalFormula(f"the formula is longer than {MAX_CHARS} characters")
    expression = _drop_stated_result(text.strip())
    _check_characters(expression)
    _check_parentheses(expression)
    tree = _syntax_tree(expression)
    value, numbers = _evaluate(tree.body)
    return Formula(text=expression, numbers=tuple(numbers), value=value)


def _drop_stated_result(text: str) -> str:
    if "=" not in text:
        return text
    left, _, right = text.rpartition("=")
    if "=" in left or not STATED.fullmatch(right):
        raise IllegalFormula("'=' may appear only once, at the end, followed by a number")
    return left.strip()


def _check_characters(text: str) -> None:
    if not text:
        raise IllegalFormula("the formula is empty")
    bad = next((c for c in text if c not in ALLOWED), None)
    if bad is not None:
        raise IllegalFormula(f"{bad!r} is not allowed; use only digits, + - * / and parentheses")


def _check_parentheses(text: str) -> None:
    depth = 0
    for char in text:
        depth += (char == "(") - (char == ")")
        if depth < 0:
            raise IllegalFormula("a ')' has no matching '('")
        if depth > MAX_DEPTH:
            raise IllegalFormula(f"parentheses are nested more than {MAX_DEPTH} deep")
    if depth:
        raise IllegalFormula("a '(' is never closed")


def _syntax_tree(text: str) -> ast.Expression:
    try:
        return ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        raise IllegalFormula("it is not a well-formed formula") from None


def _evaluate(node: ast.AST) -> tuple[Fraction | None, list[int]]:
    """The exact value (None after a division by zero) and the literals in reading order; nothing is executed."""
    if isinstance(node, ast.Constant):
        return _literal(node)
    if isinstance(node, ast.BinOp) and type(node.op) in OPERATORS:
        left, left_numbers = _evaluate(node.left)
        right, right_numbers = _evaluate(node.right)
        return _apply(type(node.op), left, right), left_numbers + right_numbers
    raise IllegalFormula(_describe(node))


def _literal(node: ast.Constant) -> tuple[Fraction, list[int]]:
    # type() and not isinstance(): bool is an int subclass (unreachable through ALLOWED, but cheap to be sure)
    if type(node.value) is not int:
        raise IllegalFormula(f"{node.value!r} is not a whole number")
    if node.value >= 10**MAX_DIGITS:
        raise IllegalFormula(f"numbers may have at most {MAX_DIGITS} digits")
    return Fraction(node.value), [node.value]


def _apply(op: type[ast.operator], left: Fraction | None, right: Fraction | None) -> Fraction | None:
    if left is None or right is None:
        return None
    if op is ast.Add:
        return left + right
    if op is ast.Sub:
        return left - right
    if op is ast.Mult:
        return left * right
    return None if right == 0 else left / right


def _describe(node: ast.AST) -> str:
    if isinstance(node, ast.BinOp):
        symbol = {ast.Pow: "**", ast.FloorDiv: "//", ast.Mod: "%"}.get(type(node.op), type(node.op).__name__)
        return f"the operator {symbol} is not allowed; use only + - * /"
    if isinstance(node, ast.UnaryOp):
        return "a sign before a number or a parenthesis (unary minus or plus) is not allowed"
    return "it is not a formula of numbers, + - * / and parentheses"


def format_value(value: Fraction) -> str:
    """24, or 20/3 for a value that is not whole."""
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


# -- finding the formula in an answer ------------------------------------------------------------------

FORMULA_KEY = re.compile(r"""["']formula["']\s*:\s*(?:"([^"\n]*)"|'([^'\n]*)')""")
LABELLED = re.compile(r"formula\s*[:=]\s*([0-9+\-*/()= \t]*\d[0-9+\-*/()= \t]*)", re.IGNORECASE)
FORMULA_LINE = re.compile(r"[0-9+\-*/()= \t]*\d[0-9+\-*/()= \t]*")
TRAILING_COMMA = re.compile(r",\s*([}\]])")
MAX_SCAN = 20_000  # characters of an answer searched; a formula sits near the start of any sensible answer


def extract(completion: str) -> str | None:
    """The formula a model's answer gives, or None when it gives none.

    Tried in order: the "formula" field of the first {...} object (JSON, or JSON with single quotes or trailing
    commas), a "formula": "..." pair anywhere, a "formula:" label, and the last line that looks like a formula.
    """
    text = completion[:MAX_SCAN]
    for finder in (_from_object, _from_key, _from_label, _from_last_line):
        found = finder(text)
        if found is not None and found.strip():
            return found.strip()
    return None


def _from_object(text: str) -> str | None:
    block = _first_object(text)
    if block is None:
        return None
    data = _loads_tolerant(block)
    value = data.get("formula") if isinstance(data, dict) else None
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def _first_object(text: str) -> str | None:
    """The first balanced {...} block (braces counted outside double-quoted strings)."""
    start = text.find("{")
    if start < 0:
        return None
    depth, in_string, escaped = 0, False, False
    for index in range(start, len(text)):
        char = text[index]
        if in_string:
            escaped = not escaped and char == "\\"
            in_string = escaped or char != '"'
        elif char == '"':
            in_string = True
        elif char in "{}":
            depth += 1 if char == "{" else -1
            if depth == 0:
                return text[start : index + 1]
    return None


def _loads_tolerant(block: str) -> object:
    for candidate in (block, TRAILING_COMMA.sub(r"\1", block), TRAILING_COMMA.sub(r"\1", block.replace("'", '"'))):
        try:
            return json.loads(candidate)
        except (ValueError, RecursionError):
            continue
    return None


def _from_key(text: str) -> str | None:
    match = FORMULA_KEY.search(text)
    return None if match is None else match.group(1) if match.group(1) is not None else match.group(2)


def _from_label(text: str) -> str | None:
    match = LABELLED.search(text)
    return None if match is None else match.group(1)


def _from_last_line(text: str) -> str | None:
    lines = [line.strip().strip("`") for line in text.splitlines()]
    return next((line for line in reversed(lines) if FORMULA_LINE.fullmatch(line)), None)
