"""A safe parser and evaluator for small arithmetic expressions, for verifying answers written by a model.

Model output is untrusted: it can be a million characters long, nest ten thousand parentheses, or ask for 9^9^9.
So there is no eval/exec and no computer algebra system; a recursive-descent parser builds a tiny syntax tree and an
evaluator computes it exactly with `fractions.Fraction`, every piece of work under a fixed bound:

    expr  := term (("+" | "-") term)*
    term  := unary (("*" | "/") unary | implicit)*      implicit product: 2x, 2(x+1), (x+1)(x-1), x(y+1)
    unary := ("+" | "-") unary | power
    power := atom (("^" | "**") unary)?                 right-associative: 2^3^2 = 2^9
    atom  := NUMBER | LETTER | "(" expr ")"             NUMBER: digits with an optional decimal part

Two expressions are equivalent when they agree at several random rational points (polynomial identity testing:
distinct rational functions of low degree rarely agree at random points). Bounds: `MAX_CHARS` characters,
`MAX_DEPTH` nested parentheses/signs/powers, `MAX_DIGITS` digits per number, numerators and denominators (powers
included) up to `MAX_BITS` bits, and a wall-clock deadline checked at every node. Exact values are compared exactly:
past `MAX_BITS` an expression is left undefined at that point rather than rounded, since floats would call 2^300 + 1
equal to 2^300 and 2^-1100 equal to 0. Only a fractional exponent, whose value may be irrational, sends a point to
floats, compared with a relative tolerance alone. Every failure is an `ExpressionError`, which the callers turn into
"not equivalent".

Deviations from a full CAS:
1. Variables are single letters; "xy" is rejected (write x*y), so English words never parse as products.
2. No functions (sqrt, sin, log) and no constants: "e" and "i" are ordinary variables.
3. Equivalence is probabilistic (a fixed set of random points, seeded, so the verdict is reproducible).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from fractions import Fraction

MAX_CHARS = 1_000
"""Longest expression accepted."""
MAX_DEPTH = 64
"""Deepest nesting of parentheses, signs and powers."""
MAX_DIGITS = 200
"""Most digits in one number literal."""
MAX_BITS = 4_096
"""Largest numerator or denominator (in bits) an exact evaluation may produce."""
NUM_POINTS = 6
"""Random points at which two expressions are compared."""
FLOAT_REL_TOL = 1e-9
"""Relative tolerance when a point is evaluated in floats."""


class ExpressionError(Exception):
    """The text is not an expression we accept, is undefined at a point, or took too long."""


class _NeedsFloat(ExpressionError):
    """A fractional power, whose value may be irrational: use floats for this point."""


class _TooLarge(ExpressionError):
    """An exact value beyond MAX_BITS: the expression counts as undefined at this point (module docstring)."""


@dataclass(frozen=True)
class Num:
    """A number literal: its exact value and the text it was written as."""

    value: Fraction
    text: str


@dataclass(frozen=True)
class Var:
    """A single-letter variable."""

    name: str


@dataclass(frozen=True)
class Neg:
    """Unary minus."""

    operand: Node


@dataclass(frozen=True)
class Pow:
    """base ^ exponent."""

    base: Node
    exponent: Node


@dataclass(frozen=True)
class Chain:
    """first op1 x1 op2 x2 ... evaluated left to right; the ops are all from "+-" or all from "*/".

    A flat chain rather than nested binary nodes keeps the tree as shallow as the nesting, so "1+1+...+1" cannot
    exhaust the Python stack.
    """

    first: Node
    rest: tuple[tuple[str, Node], ...]


Node = Num | Var | Neg | Pow | Chain


def tokens_of(text: str) -> list[str]:
    """The tokens of `text`: numbers, single letters, and the operators + - * / ^ ( )."""
    if len(text) > MAX_CHARS:
        raise ExpressionError(f"expression longer than {MAX_CHARS} characters")
    tokens: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch in "0123456789.":
            j = i
            while j < len(text) and text[j] in "0123456789.":
                j += 1
            tokens.append(text[i:j])
            i = j
        elif text.startswith("**", i):
            tokens.append("^")
            i += 2
        elif ch in "+-*/^()" or ("a" <= ch <= "z") or ("A" <= ch <= "Z"):
            tokens.append(ch)
            i += 1
        else:
            raise ExpressionError(f"unexpected character {ch!r}")
    return tokens


def _number(token: str) -> Num:
    whole, dot, decimals = token.partition(".")
    well_formed = (whole.isdigit() or (whole == "" and dot)) and (not dot or decimals.isdigit())
    if not well_formed or len(whole) + len(decimals) > MAX_DIGITS:
        raise ExpressionError(f"bad number {token[:20]!r}")
    return Num(Fraction(int(whole + decimals), 10 ** len(decimals)), token)


class _Parser:
    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.depth = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        token = self.peek()
        if token is None:
            raise ExpressionError("expression ends too early")
        self.pos += 1
        return token

    def expr(self) -> Node:
        first = self.term()
        rest = []
        while self.peek() in ("+", "-"):
            rest.append((self.take(), self.term()))
        return Chain(first, tuple(rest)) if rest else first

    def term(self) -> Node:
        first = self.unary()
        rest = []
        while True:
            token = self.peek()
            if token in ("*", "/"):
                rest.append((self.take(), self.unary()))
            elif token is not None and (token == "(" or token.isalpha()):
                if token.isalpha() and self.tokens[self.pos - 1].isalpha():
                    raise ExpressionError("adjacent letters; write x*y for a product")
                rest.append(("*", self.unary()))
            else:
                return Chain(first, tuple(rest)) if rest else first

    def unary(self) -> Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExpressionError(f"nesting deeper than {MAX_DEPTH}")
        if self.peek() in ("+", "-"):
            sign = self.take()
            operand = self.unary()
            node = Neg(operand) if sign == "-" else operand
        else:
            node = self.atom()
            if self.peek() == "^":
                self.take()
                node = Pow(node, self.unary())
        self.depth -= 1
        return node

    def atom(self) -> Node:
        token = self.take()
        if token == "(":
            node = self.expr()
            if self.take() != ")":
                raise ExpressionError("missing )")
            return node
        if token.isalpha():
            return Var(token)
        if token[0] in "0123456789.":
            return _number(token)
        raise ExpressionError(f"unexpected {token!r}")


def parse(text: str) -> Node:
    """The syntax tree of `text`; an ExpressionError if it is not an expression within the bounds."""
    parser = _Parser(tokens_of(text))
    node = parser.expr()
    if parser.peek() is not None:
        raise ExpressionError(f"unexpected {parser.peek()!r}")
    return node


def variables(node: Node) -> set[str]:
    """The variable names in a tree."""
    if isinstance(node, Var):
        return {node.name}
    if isinstance(node, Neg):
        return variables(node.operand)
    if isinstance(node, Pow):
        return variables(node.base) | variables(node.exponent)
    if isinstance(node, Chain):
        return variables(node.first).union(*(variables(x) for _, x in node.rest))
    return set()


def _bounded(x: Fraction) -> Fraction:
    if x.numerator.bit_length() > MAX_BITS or x.denominator.bit_length() > MAX_BITS:
        raise _TooLarge("number too large for exact evaluation")
    return x


def _exact_power(base: Fraction, exponent: Fraction) -> Fraction:
    if exponent.denominator != 1:
        raise _NeedsFloat("fractional exponent")
    e = exponent.numerator
    if base == 0 and e < 0:
        raise ExpressionError("division by zero")
    size = max(base.numerator.bit_length(), base.denominator.bit_length())
    if size > 1 and size * abs(e) > MAX_BITS:  # checked before computing it; 0, 1 and -1 stay small at any power
        raise _TooLarge("power too large for exact evaluation")
    return _bounded(base**e)


def evaluate(node: Node, point: dict[str, Fraction], deadline: float) -> Fraction:
    """The exact value of the tree at `point`; ExpressionError if undefined there or past the deadline."""
    if time.monotonic() > deadline:
        raise ExpressionError("time limit")
    if isinstance(node, Num):
        return node.value
    if isinstance(node, Var):
        return point[node.name]
    if isinstance(node, Neg):
        return -evaluate(node.operand, point, deadline)
    if isinstance(node, Pow):
        return _exact_power(evaluate(node.base, point, deadline), evaluate(node.exponent, point, deadline))
    value = evaluate(node.first, point, deadline)
    for op, operand in node.rest:
        x = evaluate(operand, point, deadline)
        if op == "/" and x == 0:
            raise ExpressionError("division by zero")
        value = _bounded(value + x if op == "+" else value - x if op == "-" else value * x if op == "*" else value / x)
    return value


def evaluate_float(node: Node, point: dict[str, float], deadline: float) -> float:
    """The floating-point value of the tree at `point`; ExpressionError if undefined, infinite or past the deadline."""
    if time.monotonic() > deadline:
        raise ExpressionError("time limit")
    try:
        if isinstance(node, Num):
            value = float(node.value)
        elif isinstance(node, Var):
            value = point[node.name]
        elif isinstance(node, Neg):
            value = -evaluate_float(node.operand, point, deadline)
        elif isinstance(node, Pow):
            base = evaluate_float(node.base, point, deadline)
            value = math.pow(base, evaluate_float(node.exponent, point, deadline))
            if value == 0 and base != 0:  # underflow: 2^0.5 * 2^-1100 is not 0
                raise ExpressionError("underflow in floats")
        else:
            value = evaluate_float(node.first, point, deadline)
            for op, operand in node.rest:
                x = evaluate_float(operand, point, deadline)
                result = value + x if op == "+" else value - x if op == "-" else value * x if op == "*" else value / x
                if result == 0 and op in "*/" and value != 0 and x != 0:
                    raise ExpressionError("underflow in floats")
                value = result
    except (OverflowError, ValueError, ZeroDivisionError) as error:
        raise ExpressionError(f"undefined in floats: {error}") from error
    if not math.isfinite(value):
        raise ExpressionError("not finite")
    return value


def _value_at(node: Node, point: dict[str, Fraction], deadline: float) -> Fraction | float:
    try:
        return evaluate(node, point, deadline)
    except _NeedsFloat:
        return evaluate_float(node, {k: float(v) for k, v in point.items()}, deadline)


def _agree(a: Fraction | float, b: Fraction | float) -> bool:
    """Exact values when equal, floats within FLOAT_REL_TOL (no absolute tolerance: tiny values are not 0)."""
    if isinstance(a, Fraction) and isinstance(b, Fraction):
        return a == b
    return math.isclose(float(a), float(b), rel_tol=FLOAT_REL_TOL)


def random_points(names: set[str], count: int = NUM_POINTS, seed: int = 0) -> list[dict[str, Fraction]]:
    """`count` points with a small nonzero rational per variable (seeded: the same verdict every time)."""
    rng = random.Random(seed)
    return [
        {name: Fraction(rng.choice([-1, 1]) * rng.randint(1, 30), rng.randint(1, 7)) for name in sorted(names)}
        for _ in range(count)
    ]


def equivalent(a: str, b: str, time_limit: float = 0.5) -> bool:
    """Whether expressions `a` and `b` agree at every random point where either is defined (at least half of them).

    False for anything that does not parse, is undefined at most points, or runs past `time_limit` seconds.
    """
    deadline = time.monotonic() + time_limit
    try:
        tree_a, tree_b = parse(a), parse(b)
        names = variables(tree_a) | variables(tree_b)
        points = random_points(names) if names else [{}]
        defined = 0
        for point in points:
            try:
                value_a = _value_at(tree_a, point, deadline)
            except ExpressionError:
                value_a = None
            try:
                value_b = _value_at(tree_b, point, deadline)
            except ExpressionError:
                value_b = None
            if time.monotonic() > deadline:
                return False
            if value_a is None and value_b is None:
                continue
            if value_a is None or value_b is None or not _agree(value_a, value_b):
                return False
            defined += 1
        return defined * 2 >= len(points)
    except ExpressionError:
        return False
