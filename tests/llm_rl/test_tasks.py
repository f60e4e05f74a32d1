"""Synthetic tasks: every worked step re-checked line by line, answers verified, seeded generation reproducible,
train and held-out splits disjoint, countdown puzzles solvable and their checker strict."""

from __future__ import annotations

import ast
import re
from collections import Counter
from fractions import Fraction

import numpy as np
import pytest

from llm_rl import tasks
from llm_rl.tasks import ALPHABET, TASKS, Problem, get_task, split_of
from rl.errors import UserError


def problems(name: str, level: int, count: int, seed: int = 0, split: str = "train") -> list[Problem]:
    rng = np.random.default_rng(seed)
    return [TASKS[name].sample(rng, level, split) for _ in range(count)]


def all_problems(count: int = 40) -> list[Problem]:
    return [
        p for name, task in TASKS.items() for level in task.levels for split in tasks.SPLITS
        for p in problems(name, level, count, seed=level, split=split)
    ]  # fmt: skip


def lines_of(problem: Problem) -> tuple[list[str], str]:
    *steps, last = problem.solution.split("\n")
    assert last == f"Answer: {problem.answer}"
    return steps, last


def verify_digit_steps(lines: list[str], pattern: str, column_pairs: list[tuple[int, int]], combine) -> int:
    """Check column steps "x op y(+carry)=total cK" against the operands' digits and carry chain; return the number
    the written digits (each total mod 10, the last carry in front) spell."""
    carry, digits = 0, []
    assert len(lines) == len(column_pairs)
    for line, (x, y) in zip(lines, column_pairs, strict=True):
        m = re.fullmatch(pattern, line)
        assert m, line
        assert (int(m["x"]), int(m["y"])) == (x, y), line
        assert int(m["carry_in"] or 0) == carry, line
        total = int(m["total"])
        assert total == combine(x, y) + carry, line
        assert int(m["carry_out"]) == total // 10, line
        digits.append(total % 10)
        carry = total // 10
    return int(str(carry) + "".join(map(str, reversed(digits))))


def test_addition_steps_are_right_digit_by_digit():
    pattern = r"(?P<x>\d)\+(?P<y>\d)(?:\+(?P<carry_in>1))?=(?P<total>\d+) c(?P<carry_out>\d)"
    for level in TASKS["addition"].levels:
        for p in problems("addition", level, 100, seed=level):
            a, b = (int(x) for x in re.fullmatch(r"Q: (\d+)\+(\d+)=", p.question).groups())
            assert len(str(a)) == level or len(str(b)) == level
            steps, _ = lines_of(p)
            width = max(len(str(a)), len(str(b)))
            xs, ys = str(a).zfill(width)[::-1], str(b).zfill(width)[::-1]
            columns = [(int(x), int(y)) for x, y in zip(xs, ys, strict=True)]
            assert verify_digit_steps(steps, pattern, columns, lambda x, y: x + y) == a + b == int(p.answer)


def test_hand_written_addition_example():
    assert tasks.addition_steps(47, 85) == ["7+5=12 c1", "4+8+1=13 c1"]
    p = tasks.make_problem("addition", 2, "Q: 47+85=", "132", tasks.addition_steps(47, 85))
    assert p.prompt + p.solution == "Q: 47+85=\n7+5=12 c1\n4+8+1=13 c1\nAnswer: 132"


def verify_multiplication(p: Problem) -> None:
    a, b = (int(x) for x in re.fullmatch(r"Q: (\d+)\*(\d+)=", p.question).groups())
    steps, _ = lines_of(p)
    digit_pattern = r"(?P<x>\d)\*(?P<y>\d)(?:\+(?P<carry_in>\d+))?=(?P<total>\d+) c(?P<carry_out>\d+)"
    partials = []
    for place, d in enumerate(str(b)[::-1]):
        if d == "0":
            continue
        if a >= 10:
            columns = [(int(x), int(d)) for x in str(a)[::-1]]
            spelled = verify_digit_steps(steps[: len(columns)], digit_pattern, columns, lambda x, y: x * y)
            assert spelled == a * int(d)
            steps = steps[len(columns) :]
        assert steps.pop(0) == f"{a}*{d}={a * int(d)}"
        if place:
            assert steps.pop(0) == f"{a}*{d}{'0' * place}={a * int(d) * 10**place}"
        partials.append(a * int(d) * 10**place)
    total = partials[0]
    for partial in partials[1:]:
        x, y, z = (int(v) for v in re.fullmatch(r"(\d+)\+(\d+)=(\d+)", steps.pop(0)).groups())
        assert (x, y, z) == (total, partial, total + partial)
        total = z
    assert steps == [] and total == a * b == int(p.answer)


def test_multiplication_steps_are_right():
    for level in TASKS["multiplication"].levels:
        for p in problems("multiplication", level, 100, seed=level):
            verify_multiplication(p)


def test_hand_written_multiplication_example():
    assert tasks.multiplication_steps(47, 85) == [
        "7*5=35 c3", "4*5+3=23 c2", "47*5=235", "7*8=56 c5", "4*8+5=37 c3", "47*8=376", "47*80=3760", "235+3760=3995",
    ]  # fmt: skip
    assert tasks.multiplication_steps(12, 305)[-1] == "60+3600=3660"  # the zero digit gives no partial product


def test_countdown_steps_reach_the_target_using_each_number_once():
    for level in TASKS["countdown"].levels:
        for p in problems("countdown", level, 100, seed=level):
            numbers, target = tasks.countdown_numbers(p.question)
            assert len(numbers) == level + 1 and target not in numbers
            pool = Counter(numbers)
            steps, _ = lines_of(p)
            for step in steps:
                a, op, b, c = re.fullmatch(r"(\d+)([-+*/])(\d+)=(\d+)", step).groups()
                a, b, c = int(a), int(b), int(c)
                assert pool[a] > 0 and (pool - Counter([a]))[b] > 0, step
                pool -= Counter([a, b])
                assert Fraction(c) == {"+": a + b, "-": a - b, "*": a * b, "/": Fraction(a, b)}[op] and c > 0, step
                pool[c] += 1
            assert c == target and sum(pool.values()) == 1
            assert reference_value(p.answer) == target


def reference_value(expression: str) -> Fraction:
    """An independent evaluator (Python's own parser) for + - * / expressions over integers."""

    def walk(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Constant):
            return Fraction(node.value)
        ops = {ast.Add: Fraction.__add__, ast.Sub: Fraction.__sub__, ast.Mult: Fraction.__mul__}
        ops[ast.Div] = Fraction.__truediv__
        return ops[type(node.op)](walk(node.left), walk(node.right))

    return walk(ast.parse(expression, mode="eval").body)


def test_countdown_solver_solves_every_generated_puzzle_and_its_answer_checks():
    for level in TASKS["countdown"].levels:
        for p in problems("countdown", level, 20, seed=100 + level):
            numbers, target = tasks.countdown_numbers(p.question)
            found = tasks.solve_countdown(numbers, target)
            assert found is not None
            assert tasks.check_countdown_expression(numbers, target, found)
            assert reference_value(found) == target
            used = Counter(int(x) for x in re.findall(r"\d+", found))
            assert not used - Counter(numbers)


def test_countdown_solver_by_hand():
    assert reference_value(tasks.solve_countdown([3, 7, 25, 50], 182)) == 182
    assert tasks.solve_countdown([2, 2], 7) is None  # 2+2, 2*2, 2/2 and 2-2 never make 7
    assert tasks.solve_countdown([5], 5) == "5"


@pytest.mark.parametrize(
    ("answer", "ok"),
    [
        ("(14-1)*2", True),
        ("2*(14-1)", True),
        ("14*2-1-1", False),  # 1 used twice
        ("14*2-2", False),  # 2 used twice
        ("13*2", False),  # 13 is not given
        ("14+1*2", False),  # 16, not 26
        ("-1+14*2-1", False),  # unary minus is not an operation of the game
        ("14^1*2-2", False),
        ("28/14*13", False),
        ("14.0*2-2", False),
        ("", False),
    ],
)
def test_countdown_check_by_hand(answer, ok):
    p = Problem("Q: 14 1 2 -> 26", "(14-1)*2", "", 2, "countdown", "x")
    assert TASKS["countdown"].check(p, f"14-1=13\n13*2=26\nAnswer: {answer}") is ok


@pytest.mark.parametrize("question", ["Q: 6+8=", "Q: 3 7 -> x", "Q: 1 -> 2 -> 3", "Q: 3 7 -> " + "9" * 5000, ""])
def test_countdown_check_of_a_question_that_is_no_puzzle_is_false_not_an_error(question):
    assert not tasks.is_countdown_question(question)
    assert TASKS["countdown"].check(Problem(question, "14", "", 1, "data", "x"), "Answer: 14") is False


def test_every_solution_checks_and_wrong_answers_do_not():
    for p in all_problems(count=10):
        task = TASKS[p.task]
        assert task.check(p, p.solution)
        assert task.check(p, p.solution + "\n")
        assert not task.check(p, p.solution.rsplit("\n", 1)[0])  # no Answer line
        wrong = str(tasks.countdown_numbers(p.question)[1] + 1) if p.task == "countdown" else str(int(p.answer) + 1)
        assert not task.check(p, p.solution.replace(f"Answer: {p.answer}", f"Answer: {wrong}"))


def test_texts_use_only_the_alphabet():
    for p in all_problems(count=20):
        assert set(p.prompt + p.solution) <= set(ALPHABET)


def test_generation_is_reproducible_per_seed():
    for name, task in TASKS.items():
        level = task.levels[-1]
        assert problems(name, level, 20, seed=7) == problems(name, level, 20, seed=7)
        assert problems(name, level, 20, seed=7) != problems(name, level, 20, seed=8)


def test_train_and_held_out_splits_never_overlap():
    for name, task in TASKS.items():
        for level in task.levels:
            train = {p.question for p in problems(name, level, 300, seed=1)}
            held_out = {p.question for p in problems(name, level, 60, seed=2, split="held_out")}
            assert held_out and not train & held_out
            assert {split_of(q) for q in train} == {"train"} and {split_of(q) for q in held_out} == {"held_out"}
    share = np.mean([split_of(f"Q: {i}+{j}=") == "held_out" for i in range(100) for j in range(100)])
    assert abs(share - tasks.HELD_OUT_FRACTION) < 0.01


def test_ids_are_stable_and_distinct():
    batch = problems("addition", 4, 200, seed=3)
    assert len({p.id for p in batch}) == len({p.question for p in batch})
    assert all(p.id.startswith("addition-4-") for p in batch)


def test_user_errors():
    with pytest.raises(UserError, match="unknown task 'division'"):
        get_task("division")
    with pytest.raises(UserError, match="no level 9"):
        get_task("countdown").sample(np.random.default_rng(0), 9)
    with pytest.raises(UserError, match="unknown split"):
        get_task("addition").sample(np.random.default_rng(0), 1, split="test")
    assert get_task("addition") is TASKS["addition"]
    for task in TASKS.values():
        assert set(task.held_out_levels) <= set(task.levels)
