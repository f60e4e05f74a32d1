"""The built-in tokenizer: one id per character, exact round trips on every task's text, special and unknown
tokens, and saving to and loading from tokenizer.json."""

from __future__ import annotations

import numpy as np
import pytest
from tokenizers import Tokenizer

from llm_rl import tokenizer as tok
from llm_rl.tasks import ALPHABET, SPLITS, TASKS
from rl.errors import UserError


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return tok.build_tokenizer()


def test_vocabulary_is_the_special_tokens_then_the_alphabet(tokenizer):
    vocab = tokenizer.get_vocab()
    assert [vocab[t] for t in tok.SPECIAL_TOKENS] == [tok.PAD_ID, tok.BOS_ID, tok.EOS_ID, tok.UNK_ID] == [0, 1, 2, 3]
    assert len(vocab) == 4 + len(set(ALPHABET))
    assert sorted(vocab.values()) == list(range(len(vocab)))
    assert {ch for ch in vocab if ch not in tok.SPECIAL_TOKENS} == set(ALPHABET)


def test_round_trip_is_exact_for_every_task_text(tokenizer):
    rng = np.random.default_rng(0)
    for task in TASKS.values():
        for level in task.levels:
            for split in SPLITS:
                for _ in range(10):
                    problem = task.sample(rng, level, split)
                    text = problem.prompt + problem.solution
                    encoding = tokenizer.encode(text)
                    assert len(encoding.ids) == len(text)  # one token per character
                    assert tok.UNK_ID not in encoding.ids
                    assert tokenizer.decode(encoding.ids) == text


def test_spaces_and_newlines_are_tokens(tokenizer):
    text = "Q: 47+85=\n7+5=12 c1\n4+8+1=13 c1\nAnswer: 132"
    assert tokenizer.encode(text).tokens == list(text)
    assert tokenizer.decode(tokenizer.encode("  \n\n ").ids) == "  \n\n "


def test_special_and_unknown_tokens(tokenizer):
    ids = [tok.BOS_ID, *tokenizer.encode("12").ids, tok.EOS_ID, tok.PAD_ID]
    assert tokenizer.decode(ids) == "12"
    assert tokenizer.decode(ids, skip_special_tokens=False) == "<bos>12<eos><pad>"
    assert tokenizer.encode("<bos>1<eos>").ids == [tok.BOS_ID, tokenizer.token_to_id("1"), tok.EOS_ID]
    assert tokenizer.encode("1é2").ids == [tokenizer.token_to_id("1"), tok.UNK_ID, tokenizer.token_to_id("2")]


def test_save_and_load(tokenizer, tmp_path):
    path = tok.save_tokenizer(tokenizer, tmp_path / "model")
    assert path == tmp_path / "model" / "tokenizer.json"
    text = "Q: 3 7 25 50 -> 182\n(50*3)+(25+7)"
    for source in (path, tmp_path / "model"):
        loaded = tok.load_tokenizer(source)
        assert loaded.get_vocab() == tokenizer.get_vocab()
        assert loaded.encode(text).ids == tokenizer.encode(text).ids
        assert loaded.decode(loaded.encode(text).ids) == text
    assert Tokenizer.from_file(str(path)).get_vocab_size() == tokenizer.get_vocab_size()


def test_load_errors(tmp_path):
    with pytest.raises(UserError, match="no tokenizer at"):
        tok.load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(UserError, match="not a valid tokenizer.json"):
        tok.load_tokenizer(tmp_path)
