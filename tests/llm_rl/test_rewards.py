"""Answer extraction and checking by hand, the safe expression parser against Python's own parser, bounds on hostile
input (fuzzed with hypothesis), no eval/exec in the verifier sources, and Kimi's length reward on hand-made groups."""

from __future__ import annotations

import ast
import random
import time
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_rl import expressions, rewards
from llm_rl.expressions import ExpressionError, equivalent, parse
from llm_rl.rewards import (
    answers_match,
    extract_answer,
    extract_answer_line,
    extract_boxed,
    extract_last_number,
    is_correct,
    kimi_length_reward,
    parse_number,
    symbolically_equivalent,
)

TIME_BOUND = 2.0  # seconds: a safety bound (hostile input must not hang a training run), not a speed target


def test_extract_answer_line():
    assert extract_answer_line("7+5=12 c1\nAnswer: 132\n") == "132"
    assert extract_answer_line("Answer: 1\nAnswer:  2 \nmore") == "2"
    assert extract_answer_line("Answer:   \n") is None
    assert extract_answer_line("no answer here") is None


def test_extract_boxed():
    assert extract_boxed(r"so \boxed{\frac{1}{2}}.") == r"\frac{1}{2}"
    assert extract_boxed(r"\boxed{1} then \boxed{x^{2}+1}") == "x^{2}+1"
    assert extract_boxed(r"\boxed{1} then \boxed{2") is None  # the last box is unclosed (a cut-off completion)
    assert extract_boxed("nothing boxed") is None


def test_extract_last_number():
    assert extract_last_number("3 apples and 1,234.5 pears.") == "1,234.5"
    assert extract_last_number("it is -7") == "-7"
    assert extract_last_number("about 3/4 of them") == "3/4"
    assert extract_last_number("none") is None


def test_extract_answer_precedence():
    assert extract_answer("\\boxed{5} 7\nAnswer: 9") == "9"
    assert extract_answer("Answer: \\boxed{9}") == "9"
    assert extract_answer("\\boxed{5} and then 7") == "5"
    assert extract_answer("first 5 and then 7") == "7"
    assert extract_answer("") is None


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1,234", Fraction(1234)),
        ("1,234,567.5", Fraction(2469135, 2)),
        ("3/4", Fraction(3, 4)),
        ("-0.5", Fraction(-1, 2)),
        ("+.25", Fraction(1, 4)),
        ("$5", Fraction(5)),
        ("12.", Fraction(12)),
        ("1,23", None),
        ("3/0", None),
        ("abc", None),
        ("1e5", None),
        ("9" * 201, None),
    ],
)
def test_parse_number(text, value):
    assert parse_number(text) == value


@pytest.mark.parametrize(
    ("predicted", "reference", "match"),
    [
        ("  yes ", "yes", True),
        ("Yes", "yes", False),  # exact matching is case-sensitive
        ("18.0", "18", True),
        ("1,000", "1000", True),
        ("0.75", "3/4", True),
        ("0.3333333", "1/3", True),  # within the relative tolerance 1e-6
        ("0.333", "1/3", False),
        ("17", "18", False),
        ("\\frac{1}{2}", "1/2", True),
        ("\\frac{1}{2}", "0.5", True),
        ("\\dfrac{3}{4}", "0.75", True),
        ("\\frac12", "1/2", True),
        ("-\\frac{1}{2}", "-0.5", True),
        ("\\left(x+1\\right)^{2}", "x^2+2x+1", True),
        ("2\\cdot 3", "6", True),
        ("$\\frac{x}{2}$", "0.5x", True),
        ("\\sqrt{2}", "\\sqrt{2}", True),  # exact, although \sqrt is outside the symbolic subset
        ("\\sqrt{2}", "1.41421356", False),
        ("\\text{2}", "2", False),
    ],
)
def test_answers_match_by_hand(predicted, reference, match):
    assert answers_match(predicted, reference) is match


def test_is_correct_on_whole_completions():
    assert is_correct("so the answer is \\boxed{\\frac{1}{2}}", "0.5")
    assert is_correct("Natalia sold 48/2 = 24 clips in May, 48+24 = 72 in all.", "72")
    assert not is_correct("Natalia sold 48/2 = 24 clips in May.", "72")
    assert not is_correct("no answer", "1")


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("x+1", "1+x"),
        ("(x-1)(x+1)", "x^2-1"),
        ("2x", "x+x"),
        ("x/2", "0.5x"),
        ("(a+b)^2", "a^2+2a*b+b^2"),
        ("x^-1", "1/x"),
        ("2^10", "1024"),
        ("2**10", "1024"),
        ("-x^2", "-(x^2)"),
        ("2^3^2", "512"),
        ("(x^2-1)/(x-1)", "x+1"),
    ],
)
def test_symbolically_equivalent(a, b):
    assert symbolically_equivalent(a, b)
    assert symbolically_equivalent(b, a)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("x+1", "x+2"),
        ("x^2", "2x"),
        ("x+y", "x+z"),
        ("(x+1)^2", "x^2+1"),
        ("-x^2", "(-x)^2"),
        ("xy", "x*y"),  # adjacent letters are rejected, so words never parse as products
        ("yes", "sey"),
        ("1/0", "1/0"),  # defined nowhere
        ("x+", "x"),
        ("", "0"),
    ],
)
def test_not_symbolically_equivalent(a, b):
    assert not symbolically_equivalent(a, b)


def random_expression(rng: random.Random, depth: int) -> str:
    if depth == 0 or rng.random() < 0.3:
        return str(rng.randint(0, 9)) if rng.random() < 0.8 else f"{rng.randint(1, 9)}.{rng.randint(0, 9)}"
    if rng.random() < 0.15:
        return f"-({random_expression(rng, depth - 1)})"
    if rng.random() < 0.1:
        return f"({random_expression(rng, depth - 1)})^{rng.randint(0, 3)}"
    op = rng.choice("+-*/")
    return f"({random_expression(rng, depth - 1)}){op}({random_expression(rng, depth - 1)})"


def python_value(text: str) -> Fraction:
    """An independent reference: Python's parser with ** for ^, walked with exact Fractions."""

    def walk(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Constant):
            return Fraction(str(node.value))
        if isinstance(node, ast.UnaryOp):
            return -walk(node.operand)
        ops = {ast.Add: "__add__", ast.Sub: "__sub__", ast.Mult: "__mul__", ast.Div: "__truediv__"}
        ops[ast.Pow] = "__pow__"
        return getattr(walk(node.left), ops[type(node.op)])(walk(node.right))

    return walk(ast.parse(text.replace("^", "**"), mode="eval").body)


def test_parser_agrees_with_python_on_random_expressions():
    rng = random.Random(0)
    checked = 0
    for _ in range(400):
        text = random_expression(rng, 4)
        try:
            reference = python_value(text)
        except ZeroDivisionError:
            with pytest.raises(ExpressionError):
                expressions.evaluate(parse(text), {}, deadline=time.monotonic() + 1)
            continue
        assert expressions.evaluate(parse(text), {}, deadline=time.monotonic() + 1) == reference, text
        checked += 1
    assert checked > 300


def test_precedence_by_hand():
    value = lambda text: expressions.evaluate(parse(text), {}, deadline=time.monotonic() + 1)  # noqa: E731
    assert value("2^3^2") == 512
    assert value("-2^2") == -4
    assert value("2/3/4") == Fraction(1, 6)
    assert value("2(3+4)(5)") == 70
    assert value("1+2*3-4/8") == Fraction(13, 2)
    assert value(".5+1.25") == Fraction(7, 4)
    for bad in ("1.", "1.2.3", "."):
        with pytest.raises(ExpressionError, match="bad number"):
            parse(bad)


def test_bounds_are_enforced():
    with pytest.raises(ExpressionError, match="nesting"):
        parse("(" * (expressions.MAX_DEPTH + 1) + "1" + ")" * (expressions.MAX_DEPTH + 1))
    assert parse("(" * 60 + "1" + ")" * 60) == expressions.Num(Fraction(1), "1")
    with pytest.raises(ExpressionError, match="longer"):
        parse("1+" * expressions.MAX_CHARS + "1")
    with pytest.raises(ExpressionError, match="bad number"):
        parse("9" * (expressions.MAX_DIGITS + 1))
    # 2^300 is exact (300 bits); 9^9^9 is beyond MAX_BITS and so undefined, like 1/0.
    assert equivalent("2^300", "2^150*2^150")
    assert not equivalent("9^9^9", "9^9^9")


@pytest.mark.parametrize(
    ("a", "b", "match"),
    [
        ("2^(-257)", "0", False),  # floats with an absolute tolerance called every tiny value 0
        ("2^300+1", "2^300", False),  # and rounded the 1 away
        ("2^1500+1", "2^1500", False),
        ("2^(-300)", "1/2^300", True),
        ("2^5000+1", "2^5000", False),  # beyond MAX_BITS: undefined, not rounded
        ("2^(1/2)*2^(-1100)", "0", False),  # a fractional power goes to floats, where 2^-1100 underflows to 0
        ("4^(1/2)", "2", True),  # inexact, so within the relative tolerance
        ("8^(1/3)", "2", True),  # 1.9999999999999998 in floats
        ("0.5", "1/2", True),
        ("3/6+0", "0.5", True),
        ("1/3+0", "0.333333333333", False),  # exact values are compared exactly (a bare number within 1e-6)
    ],
)
def test_exact_values_are_compared_exactly_and_floats_relatively(a, b, match):
    assert answers_match(a, b) is match and answers_match(b, a) is match


HOSTILE = [
    "9^9^9",
    "Answer: 9^9^9",
    "\\boxed{9^9^9^9^9}",
    "9" * 10**6,
    "Answer: " + "9" * 10**6,
    "x" * 10**6,
    "1," * 500_000,
    "(" * 10**4 + "1" + ")" * 10**4,
    "Answer: " + "(" * 10**4 + "x" + ")" * 10**4,
    "\\boxed{" * 10**4 + "1" + "}" * 10**4,
    "\\frac{" * 10**4 + "1}{2}" * 10**4,
    "Answer: " + "((x^99)^99)" * 80,
    "Answer: " + "*".join(["(7/3)^256"] * 100),
    "Answer: " + "+".join(["1"] * 499),
]


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_input_is_bounded_and_never_raises(text):
    for reference in ("9^9^9", "1", "x", text[:2000]):
        start = time.monotonic()
        assert isinstance(is_correct(text, reference), bool)
        assert isinstance(answers_match(text, reference), bool)
        assert isinstance(symbolically_equivalent(text[:2000], reference), bool)
        assert time.monotonic() - start < TIME_BOUND


MATHY = st.text(alphabet="0123456789+-*/^().,xyz {}\\boxedfracAnswer:$\n", max_size=400)


@settings(max_examples=150, deadline=None)
@given(text=st.one_of(st.text(max_size=400), MATHY), reference=st.one_of(st.text(max_size=50), MATHY))
def test_fuzzed_checks_are_bounded_and_never_raise(text, reference):
    start = time.monotonic()
    assert isinstance(is_correct(text, reference), bool)
    assert isinstance(answers_match(text, reference), bool)
    assert isinstance(symbolically_equivalent(text, reference), bool)
    assert time.monotonic() - start < TIME_BOUND


def test_kimi_length_reward_by_hand():
    # lambda = 0.5 - (len - 10) / (30 - 10): 0.5, 0.0, -0.5
    assert kimi_length_reward([10, 20, 30], [True, False, True]) == [0.5, 0.0, -0.5]
    assert kimi_length_reward([10, 20, 30], [False, False, False]) == [0.0, 0.0, -0.5]
    assert kimi_length_reward([100, 50, 75, 60], [True, True, False, True]) == [-0.5, 0.5, 0.0, 0.3]
    assert kimi_length_reward([42, 42], [True, False]) == [0.0, 0.0]
    assert kimi_length_reward([], []) == []
    with pytest.raises(ValueError, match="2 lengths but 1"):
        kimi_length_reward([1, 2], [True])


VERIFIER_MODULES = ["expressions.py", "rewards.py", "tasks.py", "data.py", "tokenizer.py"]


@pytest.mark.parametrize("name", VERIFIER_MODULES)
def test_no_eval_exec_or_sympy_in_the_verifier_sources(name):
    source = (Path(rewards.__file__).parent / name).read_text()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name):
                assert func.id not in {"eval", "exec", "compile", "__import__"}, f"{name}:{node.lineno}"
            if isinstance(func, ast.Attribute):  # builtins.eval(...); re.compile is fine
                assert func.attr not in {"eval", "exec"}, f"{name}:{node.lineno}"
        if isinstance(node, ast.Import | ast.ImportFrom):
            modules = [alias.name for alias in node.names] + [getattr(node, "module", None) or ""]
            assert not any(m.split(".")[0] == "sympy" for m in modules), f"{name}:{node.lineno}"
