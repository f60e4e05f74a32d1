"""Data loaders: plain, GSM8K and MATH rows from JSONL and Parquet, malformed rows warned about by line number, and
files that are mostly malformed, empty, missing or in the wrong format refused with a clear UserError."""

from __future__ import annotations

import json
import sys
import warnings

import pytest

from llm_rl.data import load_problems
from llm_rl.rewards import is_correct
from llm_rl.tasks import get_task
from rl.errors import UserError

GSM8K_ROW = {
    "question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?",
    "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips.\n#### 72",
}
MATH_ROW = {
    "problem": "What is $\\frac{1}{4}+\\frac{1}{4}$?",
    "solution": "We add: $\\frac{1}{4}+\\frac{1}{4} = \\boxed{\\frac{1}{2}}$.",
    "level": "Level 2",
    "type": "Prealgebra",
}


def write_jsonl(path, lines: list) -> None:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))


def test_plain_gsm8k_and_math_rows(tmp_path):
    path = tmp_path / "mixed.jsonl"
    write_jsonl(path, [{"question": " 2+2? ", "answer": "4"}, GSM8K_ROW, MATH_ROW, {"question": "7*6?", "answer": 42}])
    plain, gsm8k, math, number = load_problems(path)
    assert (plain.question, plain.answer, plain.solution, plain.level) == ("2+2?", "4", "", 0)
    assert gsm8k.answer == "72" and gsm8k.solution.endswith("72 clips.") and "####" not in gsm8k.solution
    assert math.question == MATH_ROW["problem"] and math.answer == "\\frac{1}{2}" and math.level == 2
    assert math.solution == MATH_ROW["solution"]
    assert number.answer == "42"
    assert [p.id for p in (plain, gsm8k, math, number)] == ["mixed-1", "mixed-2", "mixed-3", "mixed-4"]
    assert {p.task for p in (plain, gsm8k)} == {"mixed"}
    assert is_correct("she sold 72 clips in all", gsm8k.answer)
    assert is_correct("so the sum is \\boxed{0.5}", math.answer)


def test_an_answer_field_wins_over_the_boxed_solution(tmp_path):
    path = tmp_path / "math.jsonl"
    write_jsonl(path, [{**MATH_ROW, "answer": "1/2"}])
    assert load_problems(path)[0].answer == "1/2"


def test_malformed_rows_are_skipped_with_their_line_numbers(tmp_path):
    path = tmp_path / "some_bad.jsonl"
    rows = [{"question": f"{i}+1?", "answer": str(i + 1)} for i in range(6)]
    write_jsonl(path, [rows[0], rows[1], "{not json", rows[2], "", rows[3], {"question": "no answer"}, rows[4]])
    with pytest.warns(UserWarning) as caught:
        problems = load_problems(path)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2
    assert str(path) in messages[0] and "line 3" in messages[0] and "not valid JSON" in messages[0]
    assert "line 7" in messages[1] and '"answer" is missing' in messages[1]
    assert [p.answer for p in problems] == ["1", "2", "3", "4", "5"]
    assert [p.id for p in problems] == [f"some_bad-{n}" for n in (1, 2, 4, 6, 8)]


@pytest.mark.parametrize(
    "bad",
    [
        '["a list"]',
        '{"question": 3, "answer": "3"}',
        '{"question": "q", "answer": ""}',
        '{"question": "q", "answer": true}',
        '{"problem": "q", "solution": "no box here"}',
        '{"problem": "q", "solution": "cut off \\\\boxed{1"}',
        '{"answer": "1"}',
        '{"question": "q", "answer": NaN}',  # Python's json reads NaN and Infinity; no completion can match them
        '{"question": "q", "answer": -Infinity}',
        '{"question": "q", "answer": ' + "9" * 5000 + "}",  # over Python's 4,300-digit int conversion limit
        '{"question": "q", "answer": "1", "x": ' + "[" * 100_000 + "]" * 100_000 + "}",  # RecursionError in json
    ],
)
def test_kinds_of_malformed_rows(tmp_path, bad):
    path = tmp_path / "rows.jsonl"
    write_jsonl(path, [{"question": "q1", "answer": "1"}, bad, {"question": "q2", "answer": "2"}])
    with pytest.warns(UserWarning, match="line 2"):
        assert [p.answer for p in load_problems(path)] == ["1", "2"]


def test_a_byte_order_mark_at_the_start_is_not_part_of_the_first_row(tmp_path):
    path = tmp_path / "notepad.jsonl"
    write_jsonl(path, [{"question": "1+1?", "answer": "2"}, {"question": "2+2?", "answer": "4"}])
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the first row is read, not skipped as malformed
        assert [(p.question, p.answer) for p in load_problems(path)] == [("1+1?", "2"), ("2+2?", "4")]


def test_a_mostly_malformed_file_is_refused(tmp_path):
    path = tmp_path / "wrong_fields.jsonl"
    write_jsonl(path, [{"prompt": "q", "completion": "a"}] * 3 + [{"question": "q", "answer": "a"}])
    with pytest.warns(UserWarning), pytest.raises(UserError) as error:
        load_problems(path)
    message = str(error.value)
    assert str(path) in message and "3 of 4 lines are malformed" in message and "first at line 1" in message
    assert '"question" and "answer"' in message  # the fix


def test_warnings_are_capped(tmp_path):
    path = tmp_path / "many.jsonl"
    write_jsonl(path, ["oops"] * 12 + [{"question": "q", "answer": "a"}] * 13)
    with pytest.warns(UserWarning) as caught:
        assert len(load_problems(path)) == 13
    assert len(caught) == 11 and "2 more malformed lines" in str(caught[-1].message)


def test_limit(tmp_path):
    path = tmp_path / "many.jsonl"
    write_jsonl(path, [{"question": f"q{i}", "answer": str(i)} for i in range(10)])
    assert [p.answer for p in load_problems(path, limit=3)] == ["0", "1", "2"]


def test_file_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_problems(tmp_path / "missing.jsonl")
    with pytest.raises(UserError, match="neither .jsonl nor .parquet"):
        load_problems(tmp_path / "data.csv")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(UserError, match="holds no rows"):
        load_problems(tmp_path / "empty.jsonl")


def test_parquet_rows(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "train.parquet"
    table = pa.Table.from_pylist(
        [
            GSM8K_ROW,
            {"question": "", "answer": "1"},
            {"question": "3+4?", "answer": "7"},
            {"question": "q", "answer": "9"},
        ]
    )
    pq.write_table(table, path)
    with pytest.warns(UserWarning, match="row 2"):
        problems = load_problems(path)
    assert [p.answer for p in problems] == ["72", "7", "9"]
    assert [p.id for p in problems] == ["train-1", "train-3", "train-4"]
    (tmp_path / "broken.parquet").write_text("not parquet")
    with pytest.raises(UserError, match="not a readable Parquet file"):
        load_problems(tmp_path / "broken.parquet")


def test_parquet_without_pyarrow_says_how_to_fix_it(tmp_path, monkeypatch):
    path = tmp_path / "train.parquet"
    path.write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(UserError, match="needs pyarrow; install it with `pip install pyarrow`"):
        load_problems(path)


def test_rows_must_be_puzzles_of_a_task_whose_verifier_reads_the_question(tmp_path):
    path = tmp_path / "adds.jsonl"
    write_jsonl(path, [{"question": "Q: 3 7 -> 21", "answer": "3*7"}, {"question": "Q: 6+8=", "answer": "14"}])
    with pytest.raises(UserError, match=r"adds.jsonl line 2: 'Q: 6\+8=' is not a countdown problem like 'Q: 3 7 25"):
        load_problems(path, task=get_task("countdown"))
    assert [p.answer for p in load_problems(path, task=get_task("addition"))] == ["3*7", "14"]  # answers suffice
    assert len(load_problems(path, limit=1, task=get_task("countdown"))) == 1
