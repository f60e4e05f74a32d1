"""`rl llm` mistakes that must end in one `error:` line without losing work: an --out that already holds a model, a
run or a data file, a finished run resumed, and config.json files edited by hand (a spec key the run does not know,
a model config that lacks a field). The one-line cases that need no files of their own are in test_llm_cli.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from rl.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def rl_run(warm_model: str, tmp_path_factory) -> Path:
    """A finished two-iteration `rl llm train` run."""
    runs = tmp_path_factory.mktemp("rl_runs")
    quick = ["iterations=2", "problems_per_iteration=2", "samples_per_problem=2", "max_new_tokens=8", "pool_size=4",
             "eval_problems=0", "levels=[1]"]  # fmt: skip
    argv = ["llm", "train", "--init", warm_model, "--task", "addition", "--runs-dir", str(runs), "--quiet"]
    assert main([*argv, "--set", *quick]) == 0
    (run_dir,) = runs.iterdir()
    return run_dir


def files(directory: Path) -> dict[str, bytes]:
    """Every file under `directory` (relative path -> bytes), to compare before and after a refused command."""
    return {str(path.relative_to(directory)): path.read_bytes() for path in directory.rglob("*") if path.is_file()}


def test_refused_commands_leave_models_data_and_runs_as_they_were(cli, tmp_path, warm_model, rl_run):
    sft_run = Path(shutil.copytree(Path(warm_model).parent, tmp_path / "sft_run"))  # at steps 160, its budget
    data = tmp_path / "mine.jsonl"
    data.write_bytes(b"")  # even an empty data file is the user's
    before = files(sft_run), files(rl_run)
    model = str(sft_run / "model")
    shortest = ["llm", "shortest", "--init", model, "--task", "addition", "--problems", "1", "--n", "1"]
    cases = [
        (["llm", "merge", warm_model, warm_model, "--out", model], "already exists and is not empty"),
        (["llm", "merge", model, model, "--out", str(sft_run)], "already exists and is not empty"),
        ([*shortest, "--out", str(data)], f"{data} already exists; name a new output FILE.jsonl"),
        (["llm", "sft", "--resume", str(sft_run), "--steps", "5", "--quiet"],
         f"{sft_run} already reached steps 160 (its budget is 5); pass --steps above 160 to train it further."),
        (["llm", "sft", "--resume", str(sft_run), "--quiet"], "already reached steps 160 (its budget is 160)"),
        (["llm", "train", "--resume", str(rl_run), "--quiet"],
         f"{rl_run} already reached iterations 2 (its budget is 2); pass --set iterations=N above 2 to train it"),
    ]  # fmt: skip
    for argv, message in cases:
        code, _, err = cli(*argv)
        assert code == 2 and err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
    assert (files(sft_run), files(rl_run)) == before  # no weights, config.json, checkpoint or events file changed
    assert data.read_bytes() == b""


def test_an_empty_out_directory_takes_the_merged_model(cli, tmp_path, warm_model):
    (tmp_path / "merged").mkdir()
    code, out, _ = cli("llm", "merge", warm_model, warm_model, "--out", str(tmp_path / "merged"))
    assert code == 0 and (tmp_path / "merged" / "model.safetensors").is_file()


@pytest.mark.parametrize(
    "command, spec",
    [("sft", {"task": "addition", "colour": "red"}), ("train", {"algo": "kimi", "init": "m", "task": "addition",
                                                                "colour": "red"})],
)  # fmt: skip
def test_resume_of_a_spec_with_an_unknown_key_is_one_line(cli, tmp_path, command, spec):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"spec": spec, {"sft": "sft_config", "train": "rl_config"}[command]: {}}))
    code, _, err = cli("llm", command, "--resume", str(tmp_path))
    assert code == 2 and err.startswith(f"error: {config} has a spec `rl llm {command}` cannot read (")
    assert "'colour'" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("key", ["num_attention_heads", "intermediate_size"])
def test_a_model_config_without_a_key_names_the_key_and_the_file(cli, tmp_path, warm_model, key):
    model = Path(shutil.copytree(warm_model, tmp_path / "model"))
    config = json.loads((model / "config.json").read_text())
    del config[key]
    (model / "config.json").write_text(json.dumps(config))
    code, _, err = cli("llm", "eval", str(model), "--task", "addition", "--n", "1")
    assert code == 2
    assert err == f"error: {model / 'config.json'} has no {key!r} field; restore the file from the original download.\n"


def test_a_data_file_of_another_task_is_refused_before_any_run_starts(cli, tmp_path, warm_model):
    data = tmp_path / "adds.jsonl"
    data.write_text('{"question": "Q: 6+8=", "answer": "14"}\n')
    runs, out = tmp_path / "runs", tmp_path / "short.jsonl"
    commands = [["eval", warm_model], ["train", "--init", warm_model, "--runs-dir", str(runs)],
                ["shortest", "--init", warm_model, "--out", str(out)]]  # fmt: skip
    for argv in commands:
        code, _, err = cli("llm", *argv, "--task", "countdown", "--data", str(data))
        assert code == 2 and err.startswith(f"error: {data} line 1: 'Q: 6+8=' is not a countdown problem like ")
        assert len(err.strip().splitlines()) == 1
    assert not runs.exists() and not out.exists()


@pytest.mark.parametrize(
    "file, content, message",
    [
        ("config.json", "[1, 2]", "config.json holds a JSON list, not an object; restore it"),
        ("config.json", '{"architectures": "LlamaForCausalLM"}', "config.json has an architectures field that is not"),
        ("config.json", '{"architectures": ["FooForCausalLM"], "model_type": "foo"}',
         "transformers cannot read {model}/config.json (The checkpoint you are trying to load has model type `foo`"),
        ("config.json", '{"architectures": ["FooForCausalLM"]}', "transformers cannot read {model}/config.json ("),
        ("tokenizer.json", "{}", "tokenizer.json is not a tokenizer `tokenizers` can read ("),
        ("tokenizer.json", "[]", "tokenizer.json is not a tokenizer `tokenizers` can read ("),
    ],
)  # fmt: skip
def test_a_broken_model_directory_is_one_line_naming_the_file(cli, tmp_path, warm_model, file, content, message):
    model = Path(shutil.copytree(warm_model, tmp_path / "model"))
    (model / file).write_text(content)
    errors = []
    for argv in (["eval", str(model), "--task", "addition", "--n", "1"], ["merge", str(model), str(model), "--out",
                 str(tmp_path / "merged")]):  # fmt: skip
        code, _, err = cli("llm", *argv)
        assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
        assert str(model / file) in err
        errors.append(err)
    assert message.format(model=model) in errors[0]  # merge loads only Llama and Qwen2, and says that instead


def test_an_out_path_under_a_file_is_refused_before_loading_or_sampling(cli, tmp_path, warm_model, monkeypatch):
    from llm_rl import long2short

    def no_work(*args, **kwargs):
        raise AssertionError("the output path is checked first")

    monkeypatch.setattr(long2short, "load_pretrained", no_work)
    afile = tmp_path / "afile"
    afile.write_text("mine")
    shortest = ["llm", "shortest", "--init", warm_model, "--task", "addition", "--problems", "1", "--n", "1"]
    for argv, out in [([*shortest, "--out"], afile / "x.jsonl"), ([*shortest, "--out"], afile / "sub" / "x.jsonl"),
                      (["llm", "merge", warm_model, warm_model, "--out"], afile / "m")]:  # fmt: skip
        code, _, err = cli(*argv, str(out))
        assert code == 2 and err == (
            f"error: --out {out}: cannot make its directory ({afile} is a file, not a directory); pass a path in a "
            "directory.\n"
        )
    assert afile.read_text() == "mine"


def test_a_failed_write_of_the_output_is_one_line(cli, tmp_path, warm_model, monkeypatch):
    from llm_rl import long2short

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(long2short, "save_pretrained", full_disk)
    code, _, err = cli("llm", "merge", warm_model, warm_model, "--out", str(tmp_path / "merged"))
    assert code == 2 and err == (
        f"error: cannot write the merged model to {tmp_path / 'merged'} (No space left on device); free space or pass "
        "another --out.\n"
    )
    monkeypatch.setattr(Path, "write_text", full_disk)
    out = tmp_path / "new" / "short.jsonl"
    argv = ["llm", "shortest", "--init", warm_model, "--task", "addition", "--problems", "1", "--n", "1"]
    code, _, err = cli(*argv, "--max-new-tokens", "4", "--out", str(out))
    assert code == 2
    assert err == f"error: cannot write {out} (No space left on device); free space or pass another --out.\n"


@pytest.mark.parametrize(
    "argv, named",
    [
        (["--algo", "rloo", "--task", "multiplication", "--seed", "5", "--data", "x.jsonl"],
         "--algo, --task, --data, --seed cannot change it; drop them"),
        (["--seed", "0"], "--seed cannot change it; drop it"),
        (["--init", "m"], "--init cannot change it"),
        (["--model", "m"], "--model cannot change it"),
        (["--runs-dir", "r"], "--runs-dir cannot change it"),
        (["--config", "c.toml"], "--config cannot change it"),
        (["--set", "iterations=4", "learning_rate=1e-3", "pool_size=8"],
         "--set learning_rate, pool_size cannot change it; --set there takes only iterations, checkpoint_every"),
    ],
)  # fmt: skip
def test_train_resume_refuses_flags_that_would_change_the_run(cli, rl_run, argv, named):
    before = files(rl_run)
    code, _, err = cli("llm", "train", "--resume", str(rl_run), "--quiet", *argv)
    assert code == 2 and err.startswith("error: --resume continues a run with the config it was started with, so ")
    assert named in err and err.strip().endswith("or start a new run.") and len(err.strip().splitlines()) == 1
    assert files(rl_run) == before


@pytest.mark.parametrize(
    "argv, named",
    [(["--task", "multiplication", "--seed", "3"], "--task, --seed"), (["--model", "m"], "--model"),
     (["--model-config", "small"], "--model-config"), (["--runs-dir", "r"], "--runs-dir")],
)  # fmt: skip
def test_sft_resume_refuses_flags_that_would_change_the_run(cli, tmp_path, warm_model, argv, named):
    sft_run = shutil.copytree(Path(warm_model).parent, tmp_path / "sft_run")
    code, _, err = cli("llm", "sft", "--resume", str(sft_run), "--steps", "161", "--quiet", *argv)
    assert code == 2 and err.startswith(f"error: --resume continues a run with the config it was started with, so "
                                        f"{named} cannot change it; drop")  # fmt: skip


def test_sft_refuses_examples_longer_than_the_models_context_before_making_a_run(cli, tmp_path):
    transformers = pytest.importorskip("transformers")
    from llm_rl.tokenizer import BOS_ID, EOS_ID, build_tokenizer

    tokenizer = build_tokenizer()
    config = transformers.GPT2Config(vocab_size=tokenizer.get_vocab_size(), n_embd=16, n_layer=1, n_head=2,
                                     n_positions=32, bos_token_id=BOS_ID, eos_token_id=EOS_ID)  # fmt: skip
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "gpt2")
    tokenizer.save(str(tmp_path / "gpt2" / "tokenizer.json"))
    runs = tmp_path / "runs"
    argv = ["llm", "sft", "--task", "addition", "--model", str(tmp_path / "gpt2"), "--runs-dir", str(runs), "--quiet"]
    code, _, err = cli(*argv, "--steps", "1", "--set", "eval_problems=0", "levels=[1,2]")
    assert code == 2 and not runs.exists()
    last = err.strip().splitlines()[-1]  # after transformers' progress bars
    assert last.startswith("error: addition level 2 examples take up to ") and last.endswith(
        "beyond the model's context of 32 (max_position_embeddings); set levels to lower ones or use a longer-context "
        "model."
    )
    code, _, _ = cli(*argv, "--steps", "1", "--set", "eval_problems=0", "levels=[1]", "batch_size=2")
    assert code == 0  # level 1's examples (at most 31 tokens) fit


def test_a_data_row_too_long_for_the_context_is_named(cli, tmp_path, warm_model):
    data = tmp_path / "long.jsonl"
    rows = [{"question": "Q: 1+1=", "answer": "2"}, {"question": "Q: " + "1+" * 1200 + "1=", "answer": "1201"}]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    runs, out = tmp_path / "runs", tmp_path / "short.jsonl"
    commands = [["eval", warm_model], ["train", "--init", warm_model, "--task", "addition", "--runs-dir", str(runs)],
                ["shortest", "--init", warm_model, "--out", str(out)]]  # fmt: skip
    for argv in commands:
        code, _, err = cli("llm", *argv, "--data", str(data))
        assert code == 2 and err.startswith("error: max_new_tokens ")
        assert err.strip().endswith(
            f"plus the longest prompt (2407 tokens, {data} line 2) exceeds the model's context of 2048 tokens "
            f"(max_position_embeddings); shorten or drop {data} line 2 or use a longer-context model."
        )
    assert not runs.exists() and not out.exists()


def test_a_file_where_a_directory_belongs_is_called_a_file(cli, tmp_path, warm_model):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    (tmp_path / "dir.jsonl").mkdir()
    out = str(tmp_path / "out.jsonl")
    cases = [
        (["eval", str(afile), "--task", "addition"], f"{afile} is a file, not a directory; pass the directory"),
        (["train", "--init", str(afile), "--task", "addition"], f"{afile} is a file, not a directory; pass the"),
        (["sft", "--task", "addition", "--model", str(afile)], f"{afile} is a file, not a directory; pass a Hugging"),
        (["merge", str(afile), warm_model, "--out", str(tmp_path / "m")], f"{afile} is a file, not a directory; "),
        (["shortest", "--init", str(afile), "--task", "addition", "--out", out], f"{afile} is a file, not a dir"),
        (["eval", warm_model, "--data", str(tmp_path / "dir.jsonl")], "dir.jsonl is a directory, not a file;"),
    ]
    for argv, message in cases:
        code, _, err = cli("llm", *argv)
        assert code == 2 and err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
