"""Tests for tokenization_gpt2edu: parity with tiktoken and with transformers' own GPT-2 BPE, and offline reloading."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tiktoken
import transformers
from transformers import GPT2Tokenizer, PreTrainedTokenizerFast

from tokenization_gpt2edu import ENDOFTEXT, gpt2_tokenizer, save_gpt2_tokenizer, tiktoken_encoding

SHARED = Path(__file__).resolve().parents[1].parent / "shared"  # the repository's sibling folder ../shared

# Golden strings: each one exercises a different part of GPT-2's split pattern or of byte-level BPE.
TEXTS = {
    "english": "Hello, world! This is GPT-2's tokenizer, built from tiktoken.",
    "contractions": "don't I'll we're they've she'd it's I'm DON'T Y'ALL",
    "whitespace runs": "a  b   c\tone tab\t\ttwo tabs\n\nblank line\r\nCRLF \n \n    indented",
    "trailing spaces": "trailing spaces   ",
    "leading spaces": "   leading spaces",
    "numbers": "3.14159 2024-01-01 1234567890123456789 $1,000,000 42nd 007",
    "unicode": "café naïve Ærøskøbing Ελληνικά русский 日本語の文章 中文 한국어 🎉👍🏽 👨‍👩‍👧 \u00a0nbsp\u3000",
    "punctuation": "!!!??? ... --- (a) [b] {c} <d> @#$%^&*_+=~`|\\/ «quotes» “curly” — dash;",
    "special token": "The end of one document.<|endoftext|>The start of the next <|endoftext|> and more",
    "only special token": ENDOFTEXT,
    "empty": "",
}
TEXTS_WITHOUT_SPECIAL = {name: text for name, text in TEXTS.items() if ENDOFTEXT not in text}

# Runs in a fresh interpreter that sees only the saved folder: no project code, no tiktoken, no network.
RELOAD_SCRIPT = """
import json, sys
sys.modules["tiktoken"] = None  # from here on, any `import tiktoken` fails
from transformers import AutoTokenizer
texts = json.loads(sys.argv[1])
tokenizer = AutoTokenizer.from_pretrained("tokenizer")
ids = [tokenizer.encode(text) for text in texts]
print(json.dumps({
    "class": type(tokenizer).__name__,
    "ids": ids,
    "decoded": [tokenizer.decode(token_ids) for token_ids in ids],
    "model_max_length": tokenizer.model_max_length,
    "eos": [tokenizer.eos_token, tokenizer.eos_token_id],
    "bos": [tokenizer.bos_token, tokenizer.bos_token_id],
    "pad": tokenizer.pad_token,
}))
"""


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return gpt2_tokenizer()


@pytest.fixture(scope="module")
def encoding() -> tiktoken.Encoding:
    return tiktoken_encoding()


@pytest.mark.parametrize("text", TEXTS.values(), ids=TEXTS.keys())
def test_ids_match_tiktoken(tokenizer, encoding, text):
    assert tokenizer.encode(text) == encoding.encode(text, allowed_special="all")


@pytest.mark.parametrize("text", TEXTS.values(), ids=TEXTS.keys())
def test_decode_round_trips(tokenizer, text):
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_ids_match_tiktoken_on_a_real_corpus(tokenizer, encoding):
    paragraphs = (SHARED / "corpora" / "tinyshakespeare.txt").read_text(encoding="utf-8").split("\n\n")
    assert tokenizer(paragraphs)["input_ids"] == encoding.encode_ordinary_batch(paragraphs)


@pytest.mark.parametrize("text", TEXTS_WITHOUT_SPECIAL.values(), ids=TEXTS_WITHOUT_SPECIAL.keys())
def test_ids_match_transformers_gpt2_tokenizer(tokenizer, text):
    # An independent implementation: transformers' GPT-2 BPE built from OpenAI's original files.
    # transformers 5 takes the file paths as `vocab`/`merges`; `vocab_file`/`merges_file` are silently ignored there.
    bpe_files = SHARED / "gpt2-bpe"
    reference = GPT2Tokenizer(vocab=str(bpe_files / "encoder.json"), merges=str(bpe_files / "vocab.bpe"))
    assert len(reference) == 50257
    assert tokenizer.encode(text) == reference.encode(text)


def test_special_tokens_and_context_length(tokenizer, encoding):
    assert len(tokenizer) == encoding.n_vocab == 50257
    assert tokenizer.model_max_length == 1024
    assert (tokenizer.eos_token, tokenizer.eos_token_id) == (ENDOFTEXT, encoding.eot_token)
    assert (tokenizer.bos_token, tokenizer.bos_token_id) == (ENDOFTEXT, 50256)
    assert tokenizer.pad_token is None
    assert tokenizer("Hello world")["input_ids"] == [15496, 995]  # no BOS/EOS added, as in GPT-2


def test_saved_tokenizer_reloads_with_plain_transformers(tokenizer, encoding, tmp_path):
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    config = json.loads((tmp_path / "tokenizer" / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert hasattr(transformers, config["tokenizer_class"])  # a class plain transformers has: no custom code
    assert "auto_map" not in config

    empty_cache = tmp_path / "empty-tiktoken-cache"
    empty_cache.mkdir()
    env = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    env.update(TIKTOKEN_CACHE_DIR=str(empty_cache), HF_HUB_OFFLINE="1")
    texts = list(TEXTS.values())
    result = subprocess.run(
        [sys.executable, "-c", RELOAD_SCRIPT, json.dumps(texts)],
        check=False,  # a failure is reported below, with the child's stderr
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    reloaded = json.loads(result.stdout)

    assert reloaded["class"] == config["tokenizer_class"]
    assert reloaded["ids"] == [encoding.encode(text, allowed_special="all") for text in texts]
    assert reloaded["decoded"] == texts
    assert reloaded["model_max_length"] == 1024
    assert reloaded["eos"] == reloaded["bos"] == [ENDOFTEXT, 50256]
    assert reloaded["pad"] is None


def test_missing_bpe_files_error_names_the_cache_variable(monkeypatch):
    def offline_get_encoding(name: str) -> tiktoken.Encoding:
        raise OSError("Failed to resolve 'openaipublic.blob.core.windows.net'")  # what requests raises offline

    monkeypatch.setattr(tiktoken, "get_encoding", offline_get_encoding)
    with pytest.raises(OSError, match="TIKTOKEN_CACHE_DIR"):
        tiktoken_encoding()


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {file.name: file.read_bytes() for file in sorted(folder.iterdir())}


def test_save_gpt2_tokenizer_writes_what_save_pretrained_writes_and_caches_it(tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("GPT2EDU_CACHE", str(tmp_path / "cache"))
    tokenizer.save_pretrained(tmp_path / "built")
    for name in ("first", "second"):  # the first call fills the cache, the second copies from it
        (tmp_path / name).mkdir()
        save_gpt2_tokenizer(tmp_path / name)
        assert folder_bytes(tmp_path / name) == folder_bytes(tmp_path / "built")
    (cached,) = (tmp_path / "cache").iterdir()  # one finished entry, no leftover temporary folder
    assert folder_bytes(cached) == folder_bytes(tmp_path / "built")

    # The second call really reads the cache: what is changed there shows up in the next folder written.
    (cached / "tokenizer_config.json").write_text("{}")
    (tmp_path / "third").mkdir()
    save_gpt2_tokenizer(tmp_path / "third")
    assert (tmp_path / "third" / "tokenizer_config.json").read_text() == "{}"


def test_save_gpt2_tokenizer_without_a_writable_cache(tokenizer, tmp_path, monkeypatch):
    (tmp_path / "not-a-folder").write_text("a file where the cache folder would go")
    monkeypatch.setenv("GPT2EDU_CACHE", str(tmp_path / "not-a-folder"))
    tokenizer.save_pretrained(tmp_path / "built")
    (tmp_path / "out").mkdir()
    save_gpt2_tokenizer(tmp_path / "out")
    assert folder_bytes(tmp_path / "out") == folder_bytes(tmp_path / "built")
    assert (tmp_path / "not-a-folder").is_file()
