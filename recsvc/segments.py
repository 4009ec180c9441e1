"""A small, safe filter language over categorical features (users or items).

Used by ``recsvc export --segment``, ``recsvc audience --item-filter`` and experiment
segments. Expressions are tokenized and parsed by recursive descent into a tiny tree;
nothing is ever ``eval``'d. Grammar::

    expr       := and_expr ("or" and_expr)*
    and_expr   := not_expr ("and" not_expr)*
    not_expr   := "not" not_expr | "(" expr ")" | comparison
    comparison := FIELD ("==" | "!=") value
                | FIELD ["not"] "in" "(" value ("," value)* [","] ")"
    value      := STRING | NUMBER

Strings take single or double quotes with backslash escapes (``\\"``, ``\\'``, ``\\\\``,
``\\n``, ``\\t``). Bare numbers are compared as the text written (``age == 30`` is
``age == "30"``): features are categorical strings. A feature a row lacks reads as ``""``.
Keywords are case-insensitive; field names are case-sensitive.

Example: ``region in ("US-9", "CA") and not age_bucket == "18-24"``.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np

from recsvc.errors import UsageError

__all__ = ["Segment", "SegmentError", "parse_segment"]

# Long expressions are a smell and deep nesting would exhaust the parser's recursion.
MAX_EXPRESSION_CHARS = 10_000
MAX_DEPTH = 100

_KEYWORDS = frozenset({"and", "or", "not", "in"})
_ESCAPES = {'"': '"', "'": "'", "\\": "\\", "n": "\n", "t": "\t", "r": "\r", "0": "\0"}
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_SPACE = re.compile(r"\s+")


class SegmentError(UsageError):
    """A segment expression that does not parse or names an unknown field.

    ``position`` is the 1-based column of the offending character; the message ends with
    the expression and a caret under that column (the CLI prints these three lines as
    they are; every other error is folded onto one line).
    """

    keeps_layout = True

    def __init__(self, message: str, expression: str, position: int) -> None:
        self.reason = message
        self.expression = expression
        self.position = position
        shown = expression.replace("\n", " ").replace("\t", " ")
        caret = " " * (position - 1) + "^"
        super().__init__(
            f"bad segment expression: {message} at column {position}\n  {shown}\n  {caret}"
        )


# -- tokens ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "ident", "kw", "str", "num", "op", "end"
    text: str  # keyword lower-cased; string literal unescaped
    pos: int  # 0-based offset in the expression


def _tokenize(expr: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(expr)
    while i < n:
        ch = expr[i]
        space = _SPACE.match(expr, i)
        if space:
            i = space.end()
            continue
        if ch in "\"'":
            text, i_next = _read_string(expr, i)
            tokens.append(_Token("str", text, i))
            i = i_next
            continue
        if expr.startswith(("==", "!="), i):
            tokens.append(_Token("op", expr[i : i + 2], i))
            i += 2
            continue
        if ch in "(),":
            tokens.append(_Token("op", ch, i))
            i += 1
            continue
        number = _NUMBER.match(expr, i)
        if number:
            tokens.append(_Token("num", number.group(), i))
            i = number.end()
            continue
        ident = _IDENT.match(expr, i)
        if ident:
            word = ident.group()
            if word.lower() in _KEYWORDS:
                tokens.append(_Token("kw", word.lower(), i))
            else:
                tokens.append(_Token("ident", word, i))
            i = ident.end()
            continue
        hint = " (use == for equality)" if ch == "=" else ""
        raise SegmentError(f"unexpected character {ch!r}{hint}", expr, i + 1)
    tokens.append(_Token("end", "", n))
    return tokens


def _read_string(expr: str, start: int) -> tuple[str, int]:
    quote = expr[start]
    out: list[str] = []
    i = start + 1
    while i < len(expr):
        ch = expr[i]
        if ch == quote:
            return "".join(out), i + 1
        if ch == "\\":
            if i + 1 >= len(expr):
                break
            escaped = _ESCAPES.get(expr[i + 1])
            if escaped is None:
                raise SegmentError(f"unknown escape '\\{expr[i + 1]}' in string", expr, i + 1)
            out.append(escaped)
            i += 2
            continue
        out.append(ch)
        i += 1
    raise SegmentError("unterminated string", expr, start + 1)


# -- tree --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Compare:
    field: str
    values: frozenset[str]
    negate: bool  # != / not in

    def matches(self, features: Mapping[str, str]) -> bool:
        value = features.get(self.field)
        text = "" if value is None else str(value)
        return (text in self.values) != self.negate

    def mask(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        column = columns[self.field]
        if len(self.values) == 1:
            (only,) = self.values
            hit = column == only
        else:
            hit = np.isin(column, list(self.values))
        return np.asarray(~hit if self.negate else hit, dtype=bool)


@dataclass(frozen=True, slots=True)
class _Not:
    child: _Node

    def matches(self, features: Mapping[str, str]) -> bool:
        return not self.child.matches(features)

    def mask(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        return ~self.child.mask(columns)


@dataclass(frozen=True, slots=True)
class _BoolOp:
    op: str  # "and" | "or"
    children: tuple[_Node, ...]

    def matches(self, features: Mapping[str, str]) -> bool:
        if self.op == "and":
            return all(c.matches(features) for c in self.children)
        return any(c.matches(features) for c in self.children)

    def mask(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        combine = np.logical_and if self.op == "and" else np.logical_or
        out = self.children[0].mask(columns)
        for child in self.children[1:]:
            out = combine(out, child.mask(columns))
        return out


_Node = _Compare | _Not | _BoolOp


# -- parser ------------------------------------------------------------------------------


class _Parser:
    def __init__(self, expr: str, tokens: list[_Token]) -> None:
        self.expr = expr
        self.tokens = tokens
        self.i = 0
        self.depth = 0
        self.field_positions: dict[str, int] = {}

    def peek(self) -> _Token:
        return self.tokens[self.i]

    def take(self) -> _Token:
        token = self.tokens[self.i]
        if token.kind != "end":
            self.i += 1
        return token

    def fail(self, message: str, token: _Token) -> SegmentError:
        return SegmentError(message, self.expr, token.pos + 1)

    def expect_op(self, op: str, what: str) -> _Token:
        token = self.take()
        if token.kind != "op" or token.text != op:
            raise self.fail(f"expected {what}, found {_describe(token)}", token)
        return token

    def parse(self) -> _Node:
        node = self.or_expr()
        token = self.peek()
        if token.kind != "end":
            hint = " (combine conditions with 'and' / 'or')" if token.kind == "ident" else ""
            raise self.fail(f"unexpected {_describe(token)}{hint}", token)
        return node

    def or_expr(self) -> _Node:
        children = [self.and_expr()]
        while self.peek().kind == "kw" and self.peek().text == "or":
            self.take()
            children.append(self.and_expr())
        return children[0] if len(children) == 1 else _BoolOp("or", tuple(children))

    def and_expr(self) -> _Node:
        children = [self.not_expr()]
        while self.peek().kind == "kw" and self.peek().text == "and":
            self.take()
            children.append(self.not_expr())
        return children[0] if len(children) == 1 else _BoolOp("and", tuple(children))

    def not_expr(self) -> _Node:
        token = self.peek()
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.fail(f"expression nested deeper than {MAX_DEPTH} levels", token)
        try:
            if token.kind == "kw" and token.text == "not":
                self.take()
                return _Not(self.not_expr())
            if token.kind == "op" and token.text == "(":
                self.take()
                node = self.or_expr()
                self.expect_op(")", "')' to close the '(' at column " + str(token.pos + 1))
                return node
            return self.comparison()
        finally:
            self.depth -= 1

    def comparison(self) -> _Node:
        token = self.take()
        if token.kind != "ident":
            raise self.fail(f"expected a field name, found {_describe(token)}", token)
        self.field_positions.setdefault(token.text, token.pos)
        op = self.take()
        if op.kind == "op" and op.text in ("==", "!="):
            return _Compare(token.text, frozenset([self.value()]), op.text == "!=")
        negate = False
        if op.kind == "kw" and op.text == "not":
            negate = True
            op = self.take()
            if op.kind != "kw" or op.text != "in":
                raise self.fail(f"expected 'in' after 'not', found {_describe(op)}", op)
        if op.kind == "kw" and op.text == "in":
            return _Compare(token.text, self.value_list(), negate)
        raise self.fail(
            f"expected ==, !=, in or not in after field '{token.text}', found {_describe(op)}",
            op,
        )

    def value_list(self) -> frozenset[str]:
        self.expect_op("(", "'(' to start a list of values")
        values = [self.value()]
        while self.peek().kind == "op" and self.peek().text == ",":
            self.take()
            if self.peek().kind == "op" and self.peek().text == ")":
                break  # trailing comma
            values.append(self.value())
        self.expect_op(")", "',' or ')' in the list of values")
        return frozenset(values)

    def value(self) -> str:
        token = self.take()
        if token.kind in ("str", "num"):
            return token.text
        if token.kind == "ident":
            raise self.fail(f"expected a value, found name '{token.text}' (quote it)", token)
        raise self.fail(f"expected a quoted string or number, found {_describe(token)}", token)


def _describe(token: _Token) -> str:
    if token.kind == "end":
        return "end of expression"
    if token.kind == "str":
        return f"string {token.text!r}"
    if token.kind == "ident":
        return f"name '{token.text}'"
    if token.kind == "num":
        return f"number {token.text}"
    return f"'{token.text}'"


# -- public ------------------------------------------------------------------------------


class Segment:
    """A parsed expression: evaluate it on one feature mapping or on whole columns."""

    def __init__(self, expression: str, root: _Node, fields: frozenset[str]) -> None:
        self.expression = expression
        self._root = root
        self.fields = fields

    def __repr__(self) -> str:
        return f"Segment({self.expression!r})"

    def __str__(self) -> str:
        return self.expression

    def matches(self, features: Mapping[str, str]) -> bool:
        """True if one row's features satisfy the expression (missing features read "")."""
        return self._root.matches(features)

    def mask(self, columns: Mapping[str, np.ndarray], size: int | None = None) -> np.ndarray:
        """Boolean mask over rows given feature columns of equal length.

        Columns the expression does not use are ignored; a used column that is absent
        reads as all ``""`` (then ``size`` or another column gives the row count).
        """
        n = size
        for column in columns.values():
            n = len(column) if n is None else n
            if len(column) != n:
                raise ValueError("segment mask: feature columns differ in length")
        if n is None:
            raise ValueError("segment mask: no columns and no size given")
        prepared = {f: _as_str_column(columns.get(f), n) for f in self.fields}
        return self._root.mask(prepared)


def _as_str_column(column: np.ndarray | None, n: int) -> np.ndarray:
    if column is None:
        return np.full(n, "", dtype="<U1")
    array = np.asarray(column)
    if array.dtype.kind == "U":
        return array
    # Object columns (pandas) may hold None/NaN for a missing feature: read those as "".
    out = np.empty(n, dtype=object)
    for i, value in enumerate(array.tolist()):
        out[i] = "" if value is None or value != value else str(value)
    return out


def parse_segment(expr: str, known_fields: Collection[str] | None = None) -> Segment:
    """Parse ``expr``; with ``known_fields``, a field outside it is refused (listing them).

    Raises :class:`SegmentError` (a :class:`~recsvc.errors.UsageError`) with the 1-based
    column of the problem.
    """
    if not isinstance(expr, str):
        raise SegmentError("expression must be a string", str(expr), 1)
    if len(expr) > MAX_EXPRESSION_CHARS:
        raise SegmentError(
            f"expression longer than {MAX_EXPRESSION_CHARS} characters",
            expr[:80],
            1,
        )
    if not expr.strip():
        raise SegmentError("empty expression", expr, 1)
    parser = _Parser(expr, _tokenize(expr))
    root = parser.parse()
    if known_fields is not None:
        known = set(known_fields)
        for name, pos in parser.field_positions.items():
            if name not in known:
                listing = ", ".join(sorted(known)) or "(none)"
                raise SegmentError(
                    f"unknown field '{name}' (known fields: {listing})", expr, pos + 1
                )
    return Segment(expr, root, frozenset(parser.field_positions))
