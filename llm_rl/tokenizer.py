"""The built-in character-level tokenizer for the synthetic tasks, as a Hugging Face `tokenizers.Tokenizer`.

One token per character of `llm_rl.tasks.ALPHABET` (digits, + - * / = ( ) > :, the letters of "Q:", "Answer:" and
the carry mark "c", space and newline) after four special tokens: <pad> = 0, <bos> = 1, <eos> = 2, <unk> = 3.
A character outside the alphabet encodes to <unk> rather than failing. Decoding joins the characters with nothing in
between, so decode(encode(text)) == text for every text over the alphabet. Special tokens are never added
automatically; the caller puts <bos> before a prompt and <eos> after a solution.

Deviation from the brief: a fourth special token, <unk>, because a word-level model needs one to encode characters
it has never seen (a model completion fed back, a user's prompt).
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

from llm_rl.tasks import ALPHABET
from rl.errors import UserError

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)
PAD_ID, BOS_ID, EOS_ID, UNK_ID = range(len(SPECIAL_TOKENS))
FILENAME = "tokenizer.json"


def vocabulary(alphabet: str = ALPHABET) -> dict[str, int]:
    """Token to id: the special tokens first, then each distinct character of the alphabet in order."""
    characters = list(dict.fromkeys(alphabet))
    return {token: i for i, token in enumerate([*SPECIAL_TOKENS, *characters])}


def build_tokenizer(alphabet: str = ALPHABET) -> Tokenizer:
    """A character-level tokenizer over `alphabet` plus the special tokens."""
    tokenizer = Tokenizer(models.WordLevel(vocabulary(alphabet), unk_token=UNK))
    # Every character, newline included, is its own pre-token; "isolated" keeps spaces as tokens of their own.
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
    return tokenizer


def save_tokenizer(tokenizer: Tokenizer, directory: str | Path) -> Path:
    """Write `tokenizer.json` into `directory` (created if needed) and return its path."""
    path = Path(directory) / FILENAME
    path.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(path))
    return path


def load_tokenizer(path: str | Path) -> Tokenizer:
    """The tokenizer in `path`: a tokenizer.json file or a directory holding one."""
    path = Path(path)
    if path.is_dir():
        path = path / FILENAME
    if not path.is_file():
        raise UserError(f"no tokenizer at {path}; pass a tokenizer.json or a directory holding one.")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as error:  # tokenizers raises a bare Exception for malformed JSON
        raise UserError(
            f"{path} is not a valid tokenizer.json ({error}); write it again with save_tokenizer."
        ) from error
