"""Synthetic reasoning tasks with verifiable answers and worked solutions, for supervised warm-up and RL.

Each task draws seeded problems at a difficulty level and writes a chain of thought a tiny character-level model can
imitate, ending in an "Answer: ..." line:

    addition        Q: 47+85=          countdown      Q: 3 7 25 50 -> 182
                    7+5=12 c1                         50*3=150
                    4+8+1=13 c1                       25+7=32
                    Answer: 132                       150+32=182
                                                      Answer: (50*3)+(25+7)
    multiplication  Q: 47*85=
                    7*5=35 c3          (digit by digit, carry out; the last carry is the leading digits)
                    4*5+3=23 c2
                    47*5=235           (the partial product; then shifted by its place: 47*80=3760)
                    ...
                    235+3760=3995      (the partial products summed)
                    Answer: 3995

Levels: addition, one operand of `level` digits (1-6) and the other of 1 to `level`; multiplication, factors of
MULTIPLICATION_DIGITS[level] digits (1x1 up to 3x3); countdown, `level` + 1 numbers from 1-20 (2 to 5 numbers).
A model sees `problem.prompt` (the question and a newline) and is trained to continue with `problem.solution`.
Train and held-out problems never overlap: `split_of(question)` assigns every question to one split by a hash of its
text, and `Task.sample` draws again until the problem lands in the requested split.

Deviations from the usual task definitions:
1. Countdown (as in TinyZero) allows any expression whose exact value is the target, using each given number at most
   once; the generator and `solve_countdown` keep the game's rule that every intermediate result is a positive
   integer, so every puzzle is solvable under the stricter rule too.
2. Zero digits of a multiplier give no partial product (they would add nothing to the sum).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from llm_rl import expressions, rewards
from rl.errors import UserError

HELD_OUT_FRACTION = 0.1
"""Share of all questions that belong to the held-out split."""
MAX_REDRAWS = 10_000
"""Draws `Task.sample` makes before deciding a level has no question in the requested split."""
ALPHABET = "0123456789+-*/=()>:cQAnswer \n"
"""Every character the tasks' texts use (the built-in tokenizer's vocabulary)."""
SPLITS = ("train", "held_out")


@dataclass(frozen=True)
class Problem:
    """One question with its reference answer and worked solution."""

    question: str
    """The question text, e.g. "Q: 47+85=" (no trailing newline)."""
    answer: str
    """The reference final answer, e.g. "132" (for countdown one valid expression; any other valid one checks)."""
    solution: str
    """The chain of thought, one step a line, ending in the line "Answer: <answer>" (empty for file data)."""
    level: int
    """Difficulty level (0 when unknown)."""
    task: str
    """Name of the task (or the data file) the problem comes from."""
    id: str
    """Stable identifier: task, level and a hash of the question."""
    origin: str = ""
    """Where a problem read from a file is in it ("data.jsonl line 3"), for messages; empty for generated ones."""

    @property
    def prompt(self) -> str:
        """What the model is shown: the question and a newline."""
        return self.question + "\n"


def split_of(question: str) -> str:
    """The split a question belongs to: "held_out" for a HELD_OUT_FRACTION of them (by SHA-256 of the text)."""
    digest = hashlib.sha256(question.encode()).digest()
    return "held_out" if int.from_bytes(digest[:8], "big") / 2**64 < HELD_OUT_FRACTION else "train"


def make_problem(task: str, level: int, question: str, answer: str, steps: list[str]) -> Problem:
    """A Problem whose solution is the steps followed by the Answer line; its id hashes the question."""
    solution = "\n".join([*steps, f"{rewards.ANSWER_PREFIX} {answer}"])
    digest = hashlib.sha256(question.encode()).hexdigest()[:12]
    return Problem(question, answer, solution, level, task, f"{task}-{level}-{digest}")


@dataclass(frozen=True)
class Task:
    """A family of generated problems: how to draw one at a level and how to check a completion."""

    name: str
    """Registry name."""
    levels: tuple[int, ...]
    """Difficulty levels, easiest first."""
    held_out_levels: tuple[int, ...]
    """Levels of the default evaluation set (drawn from the held-out split, so never trained on)."""
    generate: Callable[[np.random.Generator, int], Problem]
    """Draws one problem at a level, whatever its split."""
    check: Callable[[Problem, str], bool]
    """Whether a completion's final answer is correct for the problem."""
    reads_question: Callable[[str], bool] | None = None
    """Whether a question is one of this task's problems, for a task whose `check` reads the question (countdown:
    any expression of the given numbers counts); None when `check` needs only the reference answer."""
    example: str = ""
    """A question of this task, for error messages."""

    def sample(self, rng: np.random.Generator, level: int, split: str = "train") -> Problem:
        """A problem at `level` from `split` ("train" or "held_out"), drawing again until the split matches."""
        if level not in self.levels:
            raise UserError(f"{self.name} has no level {level}; pick one of {list(self.levels)}.")
        if split not in SPLITS:
            raise UserError(f"unknown split {split!r}; use 'train' or 'held_out'.")
        for _ in range(MAX_REDRAWS):
            problem = self.generate(rng, level)
            if split_of(problem.question) == split:
                return problem
        raise RuntimeError(f"{self.name} level {level} produced no {split} question in {MAX_REDRAWS} draws")


def _number_with_digits(rng: np.random.Generator, digits: int, low: int = 0) -> int:
    """A uniform random number with exactly `digits` digits (`low` to 9 for one digit)."""
    return int(rng.integers(low if digits == 1 else 10 ** (digits - 1), 10**digits))


def addition_steps(a: int, b: int) -> list[str]:
    """Column addition from the ones digit up: "x+y(+1)=s cK", K the carry into the next column."""
    width = max(len(str(a)), len(str(b)))
    xs, ys = str(a).zfill(width)[::-1], str(b).zfill(width)[::-1]
    steps, carry = [], 0
    for x, y in zip(xs, ys, strict=True):
        total = int(x) + int(y) + carry
        steps.append(f"{x}+{y}{'+1' if carry else ''}={total} c{total // 10}")
        carry = total // 10
    return steps


def generate_addition(rng: np.random.Generator, level: int) -> Problem:
    """a+b with one operand of exactly `level` digits and the other of 1 to `level` digits."""
    a = _number_with_digits(rng, level)
    b = _number_with_digits(rng, int(rng.integers(1, level + 1)))
    if rng.random() < 0.5:
        a, b = b, a
    return make_problem("addition", level, f"Q: {a}+{b}=", str(a + b), addition_steps(a, b))


def partial_product_steps(a: int, digit: int) -> list[str]:
    """a times one digit, from a's ones digit up: "x*d(+carry)=p cK"; nothing to show when a has one digit."""
    if a < 10:
        return []
    steps, carry = [], 0
    for x in str(a)[::-1]:
        product = int(x) * digit + carry
        steps.append(f"{x}*{digit}{f'+{carry}' if carry else ''}={product} c{product // 10}")
        carry = product // 10
    return steps


def multiplication_steps(a: int, b: int) -> list[str]:
    """Long multiplication: for each nonzero digit of b the partial product (shifted to its place), then the sum."""
    steps, partials = [], []
    for place, d in enumerate(str(b)[::-1]):
        digit = int(d)
        if digit == 0:
            continue
        steps += partial_product_steps(a, digit)
        steps.append(f"{a}*{digit}={a * digit}")
        if place > 0:
            steps.append(f"{a}*{digit}{'0' * place}={a * digit * 10**place}")
        partials.append(a * digit * 10**place)
    total = partials[0]
    for partial in partials[1:]:
        steps.append(f"{total}+{partial}={total + partial}")
        total += partial
    return steps


MULTIPLICATION_DIGITS = {1: (1, 1), 2: (2, 1), 3: (2, 2), 4: (3, 2), 5: (3, 3)}
"""Digits of the two factors at each multiplication level."""


def generate_multiplication(rng: np.random.Generator, level: int) -> Problem:
    """a*b with the factor sizes of MULTIPLICATION_DIGITS[level], no leading zeros and no zero factor."""
    digits_a, digits_b = MULTIPLICATION_DIGITS[level]
    a, b = (_number_with_digits(rng, n, low=1) for n in (digits_a, digits_b))
    return make_problem("multiplication", level, f"Q: {a}*{b}=", str(a * b), multiplication_steps(a, b))


def check_integer_answer(problem: Problem, completion: str) -> bool:
    """Whether the completion's Answer line is exactly the reference integer (leading/trailing spaces ignored)."""
    return rewards.extract_answer_line(completion) == problem.answer


COUNTDOWN_MAX_NUMBER = 20
"""Given numbers are drawn from 1..COUNTDOWN_MAX_NUMBER."""
COUNTDOWN_MAX_VALUE = 999
"""Largest target and intermediate result."""


def countdown_step(a: int, b: int, op: str) -> int | None:
    """a op b under the game's rules (positive integer results up to COUNTDOWN_MAX_VALUE), else None."""
    if op == "+":
        value = a + b
    elif op == "-":
        value = a - b
    elif op == "*":
        value = a * b
    else:
        value = a // b if a % b == 0 else 0
    return value if 0 < value <= COUNTDOWN_MAX_VALUE else None


def _operand(text: str) -> str:
    return text if text.isdigit() else f"({text})"


def generate_countdown(rng: np.random.Generator, level: int) -> Problem:
    """Level + 1 numbers combined at random into a target (so the puzzle is solvable); the steps are the combination."""
    while True:
        numbers = [int(x) for x in rng.integers(1, COUNTDOWN_MAX_NUMBER + 1, size=level + 1)]
        pool = [(n, str(n)) for n in numbers]
        steps = []
        while len(pool) > 1:
            i, j = (int(k) for k in rng.choice(len(pool), size=2, replace=False))
            (a, text_a), (b, text_b) = sorted([pool[i], pool[j]], key=lambda item: -item[0])
            op = "+-*/"[int(rng.integers(4))]
            value = None if op in "*/" and b == 1 else countdown_step(a, b, op)
            if value is None:
                continue
            steps.append(f"{a}{op}{b}={value}")
            pool = [item for k, item in enumerate(pool) if k not in (i, j)]
            pool.append((value, f"{_operand(text_a)}{op}{_operand(text_b)}"))
        target, expression = pool[0]
        if target not in numbers:
            question = f"Q: {' '.join(map(str, numbers))} -> {target}"
            return make_problem("countdown", level, question, expression, steps)


def countdown_numbers(question: str) -> tuple[list[int], int]:
    """The given numbers and the target of a countdown question; ValueError if it is not one ("Q: 6+8=")."""
    given, target = question.removeprefix("Q: ").split(" -> ")
    return [int(x) for x in given.split()], int(target)


def is_countdown_question(question: str) -> bool:
    """Whether `question` reads as a countdown puzzle, "Q: 3 7 25 50 -> 182"."""
    try:
        countdown_numbers(question)
    except ValueError:  # a wrong number of " -> " (unpacking), or a part that is not an integer
        return False
    return True


def _countdown_leaves(node: expressions.Node) -> list[int] | None:
    """The integer literals of a tree built only from numbers, + - * / and parentheses; None for anything else."""
    if isinstance(node, expressions.Num):
        return [node.value.numerator] if node.value.denominator == 1 and node.text.isdigit() else None
    if not isinstance(node, expressions.Chain):
        return None
    leaves = _countdown_leaves(node.first)
    for _, operand in node.rest:
        more = _countdown_leaves(operand)
        if leaves is None or more is None:
            return None
        leaves += more
    return leaves


def check_countdown_expression(numbers: list[int], target: int, expression: str) -> bool:
    """Whether `expression` uses only + - * / and the given numbers, each at most once, and equals the target."""
    try:
        tree = expressions.parse(expression)
        leaves = _countdown_leaves(tree)
        if leaves is None or Counter(leaves) - Counter(numbers):
            return False
        return expressions.evaluate(tree, {}, deadline=float("inf")) == target
    except expressions.ExpressionError:
        return False


def check_countdown(problem: Problem, completion: str) -> bool:
    """Whether the completion's Answer line is a valid countdown expression for the problem; False, not an error,
    when the question is no countdown puzzle (a data file's rows are as untrusted as the model's output)."""
    expression = rewards.extract_answer_line(completion)
    if expression is None or not is_countdown_question(problem.question):
        return False
    return check_countdown_expression(*countdown_numbers(problem.question), expression)


def solve_countdown(numbers: list[int], target: int) -> str | None:
    """An expression reaching the target with positive-integer intermediates (depth-first search), or None."""
    seen: set[tuple[int, ...]] = set()

    def search(pool: list[tuple[int, str]]) -> str | None:
        for value, text in pool:
            if value == target:
                return text
        key = tuple(sorted(value for value, _ in pool))
        if len(pool) < 2 or key in seen:
            return None
        seen.add(key)
        for i in range(len(pool)):
            for j in range(i + 1, len(pool)):
                # The larger number first: b - a and b / a are never positive integers when a > b.
                (a, text_a), (b, text_b) = sorted([pool[i], pool[j]], key=lambda item: -item[0])
                rest = [item for k, item in enumerate(pool) if k not in (i, j)]
                for op in "+-*/":
                    value = countdown_step(a, b, op)
                    if value is not None:
                        found = search([*rest, (value, f"{_operand(text_a)}{op}{_operand(text_b)}")])
                        if found is not None:
                            return found
        return None

    return search([(n, str(n)) for n in numbers])


TASKS = {
    "addition": Task(
        "addition", levels=(1, 2, 3, 4, 5, 6), held_out_levels=(1, 2, 3, 4, 5, 6), generate=generate_addition,
        check=check_integer_answer, example="Q: 47+85=",
    ),
    "multiplication": Task(
        "multiplication", levels=(1, 2, 3, 4, 5), held_out_levels=(1, 2, 3, 4, 5), generate=generate_multiplication,
        check=check_integer_answer, example="Q: 47*85=",
    ),
    "countdown": Task(
        "countdown", levels=(1, 2, 3, 4), held_out_levels=(1, 2, 3, 4), generate=generate_countdown,
        check=check_countdown, reads_question=is_countdown_question, example="Q: 3 7 25 50 -> 182",
    ),
}  # fmt: skip


def get_task(name: str) -> Task:
    """The registered task called `name`; a UserError listing the choices otherwise."""
    if name not in TASKS:
        raise UserError(f"unknown task {name!r}; pick one of {sorted(TASKS)}.")
    return TASKS[name]
