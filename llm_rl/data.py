"""Question/answer data sets from local files (JSONL, or Parquet with pyarrow), as `Problem`s to train and test on.

Each row is an object with a question and a reference answer, in any of these shapes:
    {"question": ..., "answer": "42"}                          plain
    {"question": ..., "answer": "... reasoning ...\\n#### 42"}  GSM8K: the answer follows the last "####", the text
                                                               before it becomes the solution
    {"problem": ..., "solution": "... \\boxed{42} ...", "level": "Level 3"}
                                                               MATH: the answer is the last \\boxed{...} in the
                                                               solution (an "answer" field wins if present)
A malformed row (not JSON, not an object, no question, no answer, an answer of NaN or Infinity) is skipped with a
warning that names its line (row for Parquet); a file where more than MAX_BAD_FRACTION of the rows are malformed
stops with a UserError, as that is almost always the wrong file or the wrong field names. A JSONL file may start
with a UTF-8 byte-order mark.

A completion to a row is checked against the row's answer by `llm_rl.rewards.is_correct` (numbers, fractions, LaTeX
and expressions compared by value), in `rl llm eval`, `train` and `shortest` alike, whatever --task says
(`row_check`). The one exception is a task whose verifier reads the question (countdown, where any expression of the
given numbers counts and the row's answer is only one of them): its verifier scores the rows, which must then all be
its puzzles (`check_task_question`).
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from llm_rl import rewards
from llm_rl.tasks import Problem, Task
from rl.errors import UserError

MAX_BAD_FRACTION = 0.5
"""Share of malformed rows above which a file is refused instead of cleaned."""
MAX_WARNINGS = 10
"""Malformed rows warned about one by one; the rest are counted in one summary warning."""
GSM8K_MARK = "####"
ROW_FORMAT_HINT = (
    'each row must be a JSON object with "question" and "answer" (GSM8K\'s "#### 42" allowed), '
    'or "problem" and "solution" holding a \\boxed{...} answer (MATH)'
)


class MalformedRow(ValueError):
    """Why one row cannot be read."""


def answer_and_solution(row: dict[str, Any]) -> tuple[str, str]:
    """The reference answer and the worked solution (possibly empty) of a row; MalformedRow if there is no answer."""
    answer, solution = row.get("answer"), row.get("solution")
    if isinstance(answer, int | float) and not isinstance(answer, bool):
        if not math.isfinite(answer):  # JSON's NaN and Infinity: no completion can match them
            raise MalformedRow(f'"answer" is {answer}, not a finite number')
        answer = str(answer)
    if solution is not None and not isinstance(solution, str):
        raise MalformedRow('"solution" is not a string')
    if isinstance(answer, str) and GSM8K_MARK in answer:
        reasoning, _, final = answer.rpartition(GSM8K_MARK)
        answer, solution = final, solution or reasoning.strip()
    if answer is None and solution is not None:
        answer = rewards.extract_boxed(solution)
        if answer is None:
            raise MalformedRow('no "answer" field and no \\boxed{...} in "solution"')
    if not isinstance(answer, str) or not answer.strip():
        raise MalformedRow('"answer" is missing, empty or not text')
    return answer.strip(), solution or ""


def problem_from_row(row: Any, source: str, number: int, origin: str = "") -> Problem:
    """The Problem in one parsed row (`origin` says where it is); MalformedRow if the row does not have the shape in
    the module docstring."""
    if not isinstance(row, dict):
        raise MalformedRow(f"expected a JSON object, got {type(row).__name__}")
    question = row.get("question", row.get("problem"))
    if not isinstance(question, str) or not question.strip():
        raise MalformedRow('"question" (or "problem") is missing, empty or not text')
    answer, solution = answer_and_solution(row)
    level = re.search(r"\d+", str(row.get("level", "")))
    level = int(level.group(0)) if level else 0
    return Problem(question.strip(), answer, solution, level, source, f"{source}-{number}", origin)


def _jsonl_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed row) for every non-blank line; a MalformedRow in place of a row that is not JSON or that
    Python's json cannot read (a huge integer, deep nesting)."""
    with path.open(encoding="utf-8-sig", errors="replace") as file:  # -sig drops a leading BOM (Notepad writes one)
        for number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as error:
                yield number, MalformedRow(f"not valid JSON ({error.msg})")
            except ValueError:  # Python refuses to convert integer literals of over 4,300 digits (sys.int_info)
                yield number, MalformedRow("not readable JSON (an integer literal of thousands of digits)")
            except RecursionError:  # json's decoder recurses once per nested [ or {
                yield number, MalformedRow("not readable JSON (nested too deeply)")


def _parquet_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """(row number from 1, row as a dict) for every row of a Parquet file."""
    try:
        import pyarrow.parquet as pq
    except ImportError as error:
        raise UserError(
            f"reading {path} needs pyarrow; install it with `pip install pyarrow` or convert the file to JSONL."
        ) from error
    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as error:  # pyarrow's errors (ArrowInvalid, OSError) for a file that is not Parquet
        raise UserError(
            f"{path} is not a readable Parquet file ({error}); check the file or convert it to JSONL."
        ) from error
    yield from enumerate(rows, start=1)


READERS = {".jsonl": _jsonl_rows, ".parquet": _parquet_rows}


def answer_matches(problem: Problem, completion: str) -> bool:
    """Whether the completion's final answer equals the row's answer by value (`llm_rl.rewards.is_correct`)."""
    return rewards.is_correct(completion, problem.answer)


def row_check(task: Task | None) -> Callable[[Problem, str], bool]:
    """The verifier of a data file's rows (module docstring): `answer_matches`, or the task's when it reads the
    question. The tasks' own exact checks would score "Answer: 0.5" wrong against a row's \\frac{1}{2}."""
    return task.check if task is not None and task.reads_question is not None else answer_matches


def check_task_question(problem: Problem, task: Task | None) -> None:
    """A UserError unless the task's verifier can read the problem's question (only countdown's reads questions):
    a file of another task's rows would otherwise fail at the first completion it scores, mid-run."""
    if task is None or task.reads_question is None or task.reads_question(problem.question):
        return
    raise UserError(
        f"{problem.origin}: {problem.question[:60]!r} is not a {task.name} problem like {task.example!r}; pass a file "
        f"of {task.name} problems or the --task its rows belong to."
    )


def load_problems(path: str | Path, limit: int | None = None, task: Task | None = None) -> list[Problem]:
    """The problems in a .jsonl or .parquet file (at most `limit`), malformed rows skipped with a warning; every
    question must be one of `task`'s when its verifier reads questions (`check_task_question`)."""
    path = Path(path)
    if path.suffix not in READERS:
        raise UserError(f"{path} is neither .jsonl nor .parquet; convert it to JSONL with one object per line.")
    if not path.is_file():
        problem = "is a directory, not a file" if path.is_dir() else "does not exist"
        raise UserError(f"data file {path} {problem}; check the path.")
    unit = "line" if path.suffix == ".jsonl" else "row"
    problems: list[Problem] = []
    bad: list[tuple[int, str]] = []
    for number, row in READERS[path.suffix](path):
        try:
            if isinstance(row, MalformedRow):
                raise row
            problems.append(problem_from_row(row, path.stem, number, f"{path} {unit} {number}"))
            check_task_question(problems[-1], task)
        except MalformedRow as error:
            bad.append((number, str(error)))
            if len(bad) <= MAX_WARNINGS:
                warnings.warn(f"{path}: skipped malformed {unit} {number}: {error}", stacklevel=2)
        if limit is not None and len(problems) >= limit:
            break
    total = len(problems) + len(bad)
    if len(bad) > MAX_WARNINGS:
        warnings.warn(f"{path}: skipped {len(bad) - MAX_WARNINGS} more malformed {unit}s", stacklevel=2)
    if total == 0:
        raise UserError(f"{path} holds no rows; {ROW_FORMAT_HINT}.")
    if len(bad) > MAX_BAD_FRACTION * total:
        first, reason = bad[0]
        raise UserError(
            f"{path}: {len(bad)} of {total} {unit}s are malformed (first at {unit} {first}: {reason}); "
            f"{ROW_FORMAT_HINT}."
        )
    return problems
