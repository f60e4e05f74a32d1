"""Rewards for reasoning: pull the final answer out of a completion, check it against the reference, shape by length.

Extraction, in order of precedence:
    (only the last MAX_COMPLETION_CHARS characters are searched)
    1. the text after the last "Answer:" (the synthetic tasks' format), unwrapping a \\boxed{...} inside it;
    2. the contents of the last \\boxed{...}, braces balanced (MATH's convention); an unbalanced last box gives none;
    3. the last number in the text (GSM8K-style free text).
Checking (`answers_match`), the first that applies decides:
    1. exact: equal after collapsing whitespace;
    2. numeric: both parse as numbers (integers, decimals, fractions like 3/4, thousands separators 1,234) and agree
       within a relative tolerance of 1e-6 (exactly, with Fractions);
    3. symbolic: both parse as expressions (llm_rl/expressions.py, no eval, bounded work and a time limit) and agree
       at random points.
LaTeX accepted (turned into plain expressions before the symbolic check): \\frac{a}{b}, \\dfrac, \\tfrac, \\frac12,
\\cdot, \\times, \\div, \\left( \\right), spacing commands \\, \\! \\; and "\\ ", $ signs, and { } as grouping (so
x^{10} works). Any other command (\\sqrt, \\pi, \\text{...}) makes the symbolic check fail; the exact check still runs.

Length reward, Kimi k1.5 (Kimi Team 2025), section 2.3.3: for the k responses to one problem with lengths len(i),
    lambda_i = 0.5 - (len(i) - min_len) / (max_len - min_len)
    reward_i = lambda_i if response i is correct, else min(0, lambda_i)        (all zero when max_len == min_len)

Deviations:
1. The paper does not say how answers are compared; the three-step check above is ours.
2. Symbolic equivalence is tested at random points rather than proved (see llm_rl/expressions.py).
"""

from __future__ import annotations

import re
from fractions import Fraction

from llm_rl import expressions

ANSWER_PREFIX = "Answer:"
BOXED = "\\boxed{"
MAX_NUMBER_DIGITS = expressions.MAX_DIGITS
"""Numbers with more digits than this are not parsed (bounds the work on a million-digit answer)."""
MAX_COMPLETION_CHARS = 100_000
"""Characters at the end of a completion searched for the answer."""
REL_TOL = 1e-6
"""Relative tolerance of the numeric check."""
SYMBOLIC_TIME_LIMIT = 0.5
"""Seconds the symbolic check may take."""

_BRACE = re.compile(r"[{}]")
_LAST_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?")
_PLAIN_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)")
_FRACTION = re.compile(r"[-+]?\d+/\d+")
_THOUSANDS = re.compile(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_LATEX_WORDS = (
    ("\\left", ""),
    ("\\right", ""),
    ("\\dfrac", "\\frac"),
    ("\\tfrac", "\\frac"),
    ("\\cdot", "*"),
    ("\\times", "*"),
    ("\\div", "/"),
    ("\\,", ""),
    ("\\!", ""),
    ("\\;", ""),
    ("\\ ", ""),
    ("$", ""),
)


def extract_answer_line(text: str) -> str | None:
    """The rest of the line after the last "Answer:", stripped; None if there is none."""
    start = text.rfind(ANSWER_PREFIX)
    if start < 0:
        return None
    line = text[start + len(ANSWER_PREFIX) :].split("\n", 1)[0].strip()
    return line or None


def extract_boxed(text: str) -> str | None:
    """The contents of the last \\boxed{...} with balanced braces; None if there is none or it is unclosed."""
    start = text.rfind(BOXED)
    if start < 0:
        return None
    depth = 1
    for brace in _BRACE.finditer(text, start + len(BOXED)):
        depth += 1 if brace.group(0) == "{" else -1
        if depth == 0:
            return text[start + len(BOXED) : brace.start()].strip()
    return None


def extract_last_number(text: str) -> str | None:
    """The last number in the text (sign, thousands separators, decimals and a /denominator included)."""
    last = None
    for match in _LAST_NUMBER.finditer(text):
        last = match
    return last.group(0) if last else None


def extract_answer(text: str) -> str | None:
    """The final answer of a completion: the Answer: line, else the last \\boxed{}, else the last number.

    Only the last MAX_COMPLETION_CHARS characters are read: the answer comes at the end, and this bounds the work.
    """
    text = text[-MAX_COMPLETION_CHARS:]
    line = extract_answer_line(text)
    if line is not None:
        return extract_boxed(line) or line
    return extract_boxed(text) or extract_last_number(text)


def normalise_whitespace(text: str) -> str:
    """The text with runs of whitespace collapsed to one space and the ends stripped."""
    return " ".join(text.split())


def parse_number(text: str) -> Fraction | None:
    """The exact value of an integer, decimal, fraction (3/4) or number with thousands separators; None otherwise.

    A leading $ and a trailing full stop are ignored; numbers over MAX_NUMBER_DIGITS digits are refused.
    """
    text = text.strip().removeprefix("$").removesuffix(".").strip()
    # A number of MAX_NUMBER_DIGITS digits has at most a third as many separators, a sign, a point and a slash.
    if len(text) > 2 * MAX_NUMBER_DIGITS or sum(ch.isdigit() for ch in text) > MAX_NUMBER_DIGITS:
        return None
    if _THOUSANDS.fullmatch(text):
        text = text.replace(",", "")
    if _PLAIN_NUMBER.fullmatch(text):
        return Fraction(text)
    if _FRACTION.fullmatch(text):
        numerator, denominator = text.split("/")
        return Fraction(int(numerator), int(denominator)) if int(denominator) != 0 else None
    return None


def numbers_match(predicted: Fraction, reference: Fraction, rel_tol: float = REL_TOL) -> bool:
    """Whether |predicted - reference| <= rel_tol |reference| (exact equality for a zero reference)."""
    return abs(predicted - reference) <= Fraction(rel_tol) * abs(reference)


def _brace_group(text: str, i: int) -> tuple[str, int]:
    """The group starting at text[i] ({...} or a single character) and the index after it."""
    if i >= len(text):
        raise expressions.ExpressionError("\\frac needs two arguments")
    if text[i] != "{":
        return text[i], i + 1
    depth = 0
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1 : j], j + 1
    raise expressions.ExpressionError("unbalanced braces")


def latex_to_plain(text: str, depth: int = 0) -> str:
    """The plain expression for the LaTeX subset in the module docstring; ExpressionError for anything else."""
    if len(text) > expressions.MAX_CHARS or depth > expressions.MAX_DEPTH:
        raise expressions.ExpressionError("LaTeX too long or too deeply nested")
    for word, replacement in _LATEX_WORDS:
        text = text.replace(word, replacement)
    out = []
    i = 0
    while i < len(text):
        if text.startswith("\\frac", i):
            numerator, i = _brace_group(text, i + len("\\frac"))
            denominator, i = _brace_group(text, i)
            out.append(f"({latex_to_plain(numerator, depth + 1)})/({latex_to_plain(denominator, depth + 1)})")
        elif text[i] == "\\":
            raise expressions.ExpressionError("unsupported LaTeX command")
        else:
            out.append({"{": "(", "}": ")"}.get(text[i], text[i]))
            i += 1
    return "".join(out)


def symbolically_equivalent(predicted: str, reference: str, time_limit: float = SYMBOLIC_TIME_LIMIT) -> bool:
    """Whether two expressions (plain or the LaTeX subset) agree at random points; False if either does not parse."""
    try:
        return expressions.equivalent(latex_to_plain(predicted), latex_to_plain(reference), time_limit)
    except expressions.ExpressionError:
        return False


def answers_match(predicted: str | None, reference: str) -> bool:
    """Whether an extracted answer equals the reference: exactly, numerically, or symbolically (module docstring)."""
    if predicted is None:
        return False
    if normalise_whitespace(predicted) == normalise_whitespace(reference):
        return True
    predicted_number, reference_number = parse_number(predicted), parse_number(reference)
    if predicted_number is not None and reference_number is not None:
        return numbers_match(predicted_number, reference_number)
    return symbolically_equivalent(predicted, reference)


def is_correct(completion: str, reference: str) -> bool:
    """Whether the final answer extracted from a completion matches the reference answer."""
    return answers_match(extract_answer(completion), reference)


def kimi_length_reward(lengths: list[int], correct: list[bool]) -> list[float]:
    """Kimi k1.5's length penalty for the k responses to one problem (module docstring); all zero if equal lengths."""
    if len(lengths) != len(correct):
        raise ValueError(f"{len(lengths)} lengths but {len(correct)} correctness flags")
    if not lengths:
        return []
    min_len, max_len = min(lengths), max(lengths)
    if max_len == min_len:
        return [0.0] * len(lengths)
    lambdas = [0.5 - (length - min_len) / (max_len - min_len) for length in lengths]
    return [lam if ok else min(0.0, lam) for lam, ok in zip(lambdas, correct, strict=True)]
