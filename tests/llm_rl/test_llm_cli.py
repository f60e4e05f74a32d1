"""`rl llm` end to end through `rl.cli.main`: sft then eval (a task, a run directory, a data file, k samples), the run
directory's config and TensorBoard tags, Ctrl-C then --resume, the lazy hook, and the one-line error cases."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from llm_rl import sft
from llm_rl.hf_io import load_pretrained
from rl.cli import main

QUICK = ["--quiet", "--set", "levels=[1]", "eval_levels=[1]", "batch_size=8", "eval_problems=2", "num_threads=1"]


pytestmark = pytest.mark.usefixtures("one_thread")


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    assert (
        main(["llm", "sft", "--task", "addition", "--steps", "30", "--runs-dir", str(runs), "--seed", "2", *QUICK]) == 0
    )
    (run_dir,) = runs.iterdir()
    return run_dir / "model"


def test_sft_writes_a_run_directory_with_config_tags_and_checkpoint(checkpoint):
    run_dir = checkpoint.parent
    assert run_dir.name.startswith("addition__sft__s2__")
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["spec"]["task"] == "addition" and saved["spec"]["seed"] == 2
    assert saved["sft_config"]["steps"] == 30 and saved["sft_config"]["levels"] == [1]
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in checkpoint.iterdir()}
    events = EventAccumulator(str(run_dir))
    events.Reload()
    assert {"losses/sft_loss", "charts/learning_rate", "eval/accuracy"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("losses/sft_loss")] == list(range(1, 31))  # x-axis: optimiser steps
    assert [e.step for e in events.Scalars("eval/accuracy")] == [30]


def test_sft_prints_the_checkpoint_last(capsys, tmp_path):
    code, out, _ = run_cli(
        capsys, "llm", "sft", "--task", "addition", "--steps", "3", "--runs-dir", str(tmp_path), *QUICK
    )
    assert code == 0
    (run_dir,) = tmp_path.iterdir()
    assert out.strip().splitlines()[-1] == f"checkpoint: {run_dir / 'model'}"


def test_eval_prints_json_last(capsys, checkpoint):
    code, out, _ = run_cli(
        capsys, "llm", "eval", str(checkpoint), "--task", "addition", "--n", "6", "--levels", "1", "2"
    )
    assert code == 0
    *levels, last = out.strip().splitlines()
    summary = json.loads(last)
    assert set(summary) == {"accuracy", "pass_at_k", "mean_length", "n"} and summary["n"] == 6
    assert summary["pass_at_k"] == summary["accuracy"]  # one greedy sample: pass@1 is the accuracy
    assert 0 < summary["mean_length"] <= 256
    assert levels == [line for line in levels if line.startswith("level ")] and len(levels) == 2
    # the run directory stands for its model; the same problems give the same answer
    code, out, _ = run_cli(
        capsys, "llm", "eval", str(checkpoint.parent), "--task", "addition", "--n", "6", "--levels", "1", "2"
    )
    assert code == 0 and json.loads(out.strip().splitlines()[-1]) == summary


def test_eval_with_samples_and_a_data_file(capsys, checkpoint, tmp_path):
    code, out, _ = run_cli(
        capsys, "llm", "eval", str(checkpoint), "--task", "addition", "--n", "4", "--levels", "1", "--samples", "3"
    )
    summary = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and summary["n"] == 4 and summary["pass_at_k"] >= summary["accuracy"]
    data = tmp_path / "sums.jsonl"
    data.write_text("\n".join(json.dumps({"question": f"Q: {a}+{a}=", "answer": str(2 * a)}) for a in range(5)))
    code, out, _ = run_cli(capsys, "llm", "eval", str(checkpoint), "--data", str(data), "--n", "3")
    assert code == 0 and json.loads(out.strip().splitlines()[-1])["n"] == 3


def test_ctrl_c_saves_and_resume_finishes(capsys, tmp_path, monkeypatch):
    real_sample_batch, calls = sft.sample_batch, []

    def interrupt_at_step_3(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return real_sample_batch(*args, **kwargs)

    monkeypatch.setattr(sft, "sample_batch", interrupt_at_step_3)
    code, _, err = run_cli(
        capsys, "llm", "sft", "--task", "addition", "--steps", "6", "--runs-dir", str(tmp_path), *QUICK
    )
    (run_dir,) = tmp_path.iterdir()
    assert code == 130 and "stopped at step 3" in err and f"rl llm sft --resume {run_dir}" in err
    assert (run_dir / "model" / "model.safetensors").is_file()
    monkeypatch.setattr(sft, "sample_batch", real_sample_batch)
    code, out, _ = run_cli(capsys, "llm", "sft", "--resume", str(run_dir), "--quiet")
    assert code == 0 and out.strip().endswith(f"checkpoint: {run_dir / 'model'}")
    events = EventAccumulator(str(run_dir))
    events.Reload()
    assert sorted(e.step for e in events.Scalars("losses/sft_loss")) == list(range(1, 7))


def test_sft_fine_tunes_a_hugging_face_directory(capsys, checkpoint, tmp_path):
    """--model starts from the given weights: with a vanishing step size the saved model is the one loaded."""
    code, out, _ = run_cli(
        capsys, "llm", "sft", "--task", "addition", "--model", str(checkpoint), "--steps", "2",
        "--runs-dir", str(tmp_path), *QUICK, "learning_rate=1e-12", "eval_problems=0",
    )  # fmt: skip
    assert code == 0
    tuned = Path(out.strip().splitlines()[-1].removeprefix("checkpoint: "))
    assert tuned.parent.parent == tmp_path and (tuned / "generation_config.json").is_file()
    (source, tokenizer), (model, _) = load_pretrained(checkpoint), load_pretrained(tuned)
    ids = torch.tensor([tokenizer.encode("Q: 3+4=\n3+4=7").ids])
    torch.testing.assert_close(model(ids), source(ids), rtol=0, atol=1e-5)


def tiny_gpt2(path: Path) -> torch.nn.Module:
    """A random GPT-2 saved by transformers, with our character tokenizer (the tasks' text must encode)."""
    transformers = pytest.importorskip("transformers")
    from llm_rl.tokenizer import BOS_ID, EOS_ID, build_tokenizer

    tokenizer = build_tokenizer()
    config = transformers.GPT2Config(
        vocab_size=tokenizer.get_vocab_size(), n_embd=32, n_layer=2, n_head=4, n_positions=128, bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(path)
    tokenizer.save(str(path / "tokenizer.json"))
    return model


def test_train_and_eval_take_any_causal_lm_directory_with_model(capsys, tmp_path):
    """`rl llm train --model` on a transformers GPT-2: it trains (every weight moves), saves a GPT-2 directory that
    `rl llm eval --model` and --resume load back."""
    from llm_rl.causal_lm import HFCausalLM, load_causal_lm

    initial = tiny_gpt2(tmp_path / "gpt2")
    quick = ["levels=[1]", "problems_per_iteration=2", "samples_per_problem=4", "max_new_tokens=8", "pool_size=4",
             "eval_problems=1", "sampler=uniform", "learning_rate=1e-3", "length_penalty_weight=1.0",
             "length_penalty_warmup=0", "gradient_checkpointing=true"]  # fmt: skip
    runs = tmp_path / "runs"
    args = ["llm", "train", "--model", str(tmp_path / "gpt2"), "--task", "addition", "--runs-dir", str(runs)]
    code, out, _ = run_cli(capsys, *args, "--quiet", "--set", "iterations=2", *quick)
    (run_dir,) = runs.iterdir()
    assert code == 0 and out.strip().endswith(str(run_dir / "model"))
    trained = load_causal_lm(run_dir / "model")
    assert isinstance(trained, HFCausalLM) and type(trained.hf) is type(initial)
    moved = [not torch.equal(p, q) for p, q in zip(trained.parameters(), initial.parameters(), strict=True)]
    assert all(moved) and len(moved) > 10  # the length reward differs within groups, so every weight got a gradient
    code, out, _ = run_cli(capsys, "llm", "eval", "--model", str(run_dir), "--task", "addition", "--n", "2",
                           "--levels", "1", "--max-new-tokens", "8")  # fmt: skip
    assert code == 0 and json.loads(out.strip().splitlines()[-1])["n"] == 2
    assert main(["llm", "train", "--resume", str(run_dir), "--quiet", "--set", "iterations=3"]) == 0
    resumed = load_causal_lm(run_dir / "model")
    assert any(not torch.equal(p, q) for p, q in zip(resumed.parameters(), trained.parameters(), strict=True))


def test_rl_policy_has_no_dropout_so_training_log_probs_are_the_sampled_ones(tmp_path):
    from llm_rl.rl_config import RLSpec
    from llm_rl.rl_run import load_policy

    assert tiny_gpt2(tmp_path).config.resid_pdrop > 0  # GPT-2 trains with dropout by default
    model, tokenizer = load_policy(RLSpec("kimi", str(tmp_path), "addition"), None, "cpu")
    ids = torch.tensor([tokenizer.encode("Q: 3+4=\n3+4=7").ids])
    model.train()
    torch.testing.assert_close(model(ids), model.eval()(ids), rtol=0, atol=0)


def test_init_and_model_may_name_the_same_model(checkpoint):
    from llm_rl.cli import one_model_path

    assert one_model_path(str(checkpoint.parent), str(checkpoint), "--init") == str(checkpoint.parent)
    assert one_model_path(None, str(checkpoint), "--init") == str(checkpoint)


def test_help_lists_the_sft_config_fields(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["llm", "sft", "--help"])
    assert exit_info.value.code == 0
    assert "learning_rate = 0.003" in capsys.readouterr().out


def test_other_commands_do_not_import_llm_rl():
    code = "import sys; from rl.cli import build_parser; build_parser(['list']); print('llm_rl' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["llm", "sft", "--task", "subtraction"], "unknown task 'subtraction'"),
        (["llm", "sft"], "needs --task"),
        (["llm", "sft", "--task", "addition", "--set", "no_such_field=1"], "no config key 'no_such_field'"),
        (["llm", "sft", "--task", "addition", "--set", "steps=0"], "bad sft config"),
        (["llm", "sft", "--task", "countdown", "--set", "levels=[6]"], "countdown has no level 6"),
        (["llm", "sft", "--task", "countdown", "--set", "eval_levels=[0]"], "countdown has no level 0"),
        (["llm", "sft", "--task", "addition", "--model", "{tmp}/missing"], "does not exist"),
        (["llm", "sft", "--resume", "{tmp}"], "has no config.json"),
        (["llm", "eval", "{tmp}/missing", "--task", "addition"], "checkpoint directory"),
        (["llm", "eval", "{tmp}", "--task", "addition"], "config.json is missing"),
        (["llm", "eval", "{ckpt}", "--task", "subtraction"], "unknown task"),
        (["llm", "eval", "{ckpt}"], "needs --task NAME or --data FILE"),
        (["llm", "eval", "{ckpt}", "--data", "{tmp}/bad.jsonl"], "malformed"),
        (["llm", "eval", "{ckpt}", "--data", "{tmp}/missing.jsonl"], "does not exist"),
        (["llm", "eval", "{ckpt}", "--task", "addition", "--levels", "9"], "no level 9"),
        (["llm", "eval", "{ckpt}", "--task", "addition", "--samples", "2", "--temperature", "0"], "temperature"),
        (["llm", "eval", "--task", "addition"], "needs a CHECKPOINT directory or --model PATH"),
        (["llm", "eval", "{ckpt}", "--model", "{tmp}", "--task", "addition"], "name different models"),
        (["llm", "train", "--init", "{ckpt}", "--model", "{tmp}", "--task", "addition"], "name different models"),
        (["llm", "train", "--task", "addition"], "needs --init CHECKPOINT (or --model PATH)"),
        (["llm", "train", "--model", "{tmp}", "--task", "addition", "--set", "precision=fp16"], "unknown precision"),
        (["llm", "sft", "--task", "addition", "--set", "device=gpu"], "not a torch device"),
        (["llm", "eval", "{ckpt}", "--task", "addition", "--temperature", "-1"], "--temperature"),
        (["llm", "eval", "{ckpt}", "--task", "addition", "--device", "foo"], "not a torch device"),
        (["llm", "eval", "{ckpt}/..", "--task", "addition", "--n", "0"], "--n"),
        (["llm", "merge", "{ckpt}", "{ckpt}", "--out", "{ckpt}"], "one of the models being merged"),
        (["llm", "merge", "{ckpt}", "{ckpt}", "--out", "{tmp}/bad.jsonl"], "is a file"),
        (["llm", "shortest", "--init", "{ckpt}", "--task", "addition", "--out", "{tmp}/dir.jsonl"], "is a directory"),
        (["llm", "merge", "{ckpt}", "{ckpt}", "--out", "{ckpt}/.."], "already exists and is not empty"),
        (["llm", "merge", "{tmp}/gym_run", "{ckpt}", "--out", "{tmp}/merged"], "is a training run directory"),
        (["llm", "shortest", "--init", "{ckpt}", "--task", "addition", "--out", "{tmp}/bad.jsonl"], "already exists"),
        (["llm", "sft", "--task", "addition", "--seed", "-1"], "--seed: -1 is below 0"),
        (["llm", "sft", "--task", "addition", "--steps", "0"], "--steps: 0 is below 1"),
        (["llm", "train", "--init", "{ckpt}", "--task", "addition", "--seed", "-5"], "--seed: -5 is below 0"),
        (
            ["llm", "eval", "{ckpt}", "--task", "addition", "--seed", str(2**64)],
            "--seed: 18446744073709551616 is above",
        ),
        (["llm", "eval", "{ckpt}", "--task", "addition", "--threads", str(10**6)], "--threads: 1000000 is above"),
        (
            ["llm", "shortest", "--init", "{ckpt}", "--task", "addition", "--out", "{tmp}/new.jsonl", "--seed", "-1"],
            "--seed",
        ),
        (
            ["llm", "eval", "{ckpt}", "--task", "addition", "--n", "1", "--max-new-tokens", "100000000"],
            "exceeds the model's context of 2048 tokens (max_position_embeddings); set max_new_tokens to 20",
        ),
        (
            [
                "llm",
                "shortest",
                "--init",
                "{ckpt}",
                "--task",
                "addition",
                "--out",
                "{tmp}/new.jsonl",
                "--max-new-tokens",
                "3000",
            ],
            "context of 2048 tokens",
        ),  # fmt: skip
        (["llm", "sft", "--task", "addition", "--set", "max_new_tokens=5000"], "context of 2048 tokens"),
        (
            ["llm", "train", "--init", "{ckpt}", "--task", "addition", "--set", "max_new_tokens=100000"],
            "context of 2048",
        ),
        (["llm", "sft", "--task", "addition", "--set", "weight_decay=-0.1"], "weight_decay must be >= 0"),
        (["llm", "train", "--init", "{ckpt}", "--task", "addition", "--set", "success_decay=1"], "success_decay must"),
        (["llm", "train", "--init", "{ckpt}", "--task", "addition", "--set", "priority_floor=0"], "priority_floor in"),
        (["llm", "train", "--init", "{ckpt}", "--task", "addition", "--set", "priority_floor=1.5"], "priority_floor"),
        (
            ["llm", "train", "--algo", "grpo", "--init", "{ckpt}", "--task", "addition", "--set", "clip_range=0"],
            "clip_range must be > 0",
        ),
        (
            ["llm", "train", "--algo", "grpo", "--init", "{ckpt}", "--task", "addition", "--set", "kl_coef=-0.1"],
            "kl_coef and sample_texts >= 0",
        ),
        (["llm", "train", "--init", "{ckpt}", "--task", "addition", "--set", "sample_texts=-1"], "sample_texts >= 0"),
    ],
)
@pytest.mark.filterwarnings("ignore:.*malformed")  # the loader warns about each bad row before it gives up
def test_mistakes_are_one_line_errors(capsys, tmp_path, checkpoint, argv, message):
    (tmp_path / "bad.jsonl").write_text("not json\n{}\n")
    (tmp_path / "dir.jsonl").mkdir()
    (tmp_path / "gym_run").mkdir()  # what `rl train` writes: a config.json, but of a run, not of a model
    (tmp_path / "gym_run" / "config.json").write_text(json.dumps({"spec": {"agent": "dqn"}, "agent_config": {}}))
    runs = tmp_path / "runs"
    extra = ["--runs-dir", str(runs)] if argv[1] in ("sft", "train") and "--resume" not in argv else []
    code, _, err = run_cli(capsys, *[a.format(tmp=tmp_path, ckpt=checkpoint) for a in argv], *extra)
    assert code == 2
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
    assert not runs.exists()  # caught before a run directory is made


def test_a_skipped_data_row_is_one_warning_line(capsys, tmp_path, checkpoint):
    data = tmp_path / "data.jsonl"
    data.write_text('{"question": "1+1=", "answer": "2"}\nnot json\n{"question": "2+2=", "answer": "4"}\n')
    code, out, err = run_cli(capsys, "llm", "eval", str(checkpoint), "--data", str(data), "--max-new-tokens", "8")
    assert code == 0 and '"n": 2' in out
    assert err.strip().splitlines() == [f"warning: {data}: skipped malformed line 2: not valid JSON (Expecting value)"]
