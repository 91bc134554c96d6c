"""Tests for tokenization_gpt2edu: parity with tiktoken and with transformers' own GPT-2 BPE, and offline reloading."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tiktoken
import transformers
from transformers import GPT2Tokenizer, PreTrainedTokenizerFast

import tokenization_gpt2edu
from tokenization_gpt2edu import (
    BPE_FILES,
    BPE_FOLDER,
    ENDOFTEXT,
    gpt2_tokenizer,
    save_gpt2_tokenizer,
    tiktoken_encoding,
)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"  # the repository's sibling folder ../shared

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
    env.update(TIKTOKEN_CACHE_DIR=str(empty_cache), HF_HUB_OFFLINE="1")  # and no tiktoken at all, below
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


def test_shipped_bpe_files_build_tiktokens_own_gpt2_encoding(encoding, monkeypatch):
    """The encoding built from the repository's files is the one tiktoken's registry loads (from ../shared's cache)."""
    if not (SHARED / "tiktoken-cache").is_dir():
        pytest.skip("../shared/tiktoken-cache (tiktoken's own cached copy of the files) is not beside the repository")
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(SHARED / "tiktoken-cache"))
    registry = tiktoken.get_encoding("gpt2")
    assert encoding._mergeable_ranks == registry._mergeable_ranks
    assert encoding._pat_str == registry._pat_str and encoding._special_tokens == registry._special_tokens
    assert encoding.n_vocab == registry.n_vocab == 50257
    text = "".join(TEXTS.values())
    assert encoding.encode(text, allowed_special="all") == registry.encode(text, allowed_special="all")


def test_damaged_bpe_file_is_a_clear_error(tmp_path, monkeypatch):
    for name in BPE_FILES:
        (tmp_path / name).write_bytes((BPE_FOLDER / name).read_bytes())
    (tmp_path / "vocab.bpe").write_text("#version: 0.2\na b\n")  # not OpenAI's file: its hash differs
    monkeypatch.setattr(tokenization_gpt2edu, "BPE_FOLDER", tmp_path)
    tiktoken_encoding.cache_clear()
    try:
        with pytest.raises(OSError, match="missing or damaged"):
            tiktoken_encoding()
    finally:
        tiktoken_encoding.cache_clear()


WHEEL_SCRIPT = """
import json, sys
from tokenization_gpt2edu import BPE_FOLDER, gpt2_tokenizer, tiktoken_encoding
text = "Every effort moves you <|endoftext|>"
print(json.dumps({"folder": str(BPE_FOLDER), "ids": tiktoken_encoding().encode(text, allowed_special="all"),
                  "hf": gpt2_tokenizer().encode(text)}))
"""


def test_installed_wheel_tokenizes_offline_with_no_cache(tmp_path, encoding):
    """From a built wheel, in a fresh interpreter with empty HOME and TMPDIR and no TIKTOKEN_CACHE_DIR."""
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", tmp_path, ROOT],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = tmp_path.glob("gpt2edu-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        assert {"gpt2edu_bpe/vocab.bpe", "gpt2edu_bpe/encoder.json", "gpt2edu_bpe/LICENSE"} <= set(archive.namelist())
        archive.extractall(tmp_path / "site")  # a wheel is a zip of the installed files
    for name in ("home", "tmp"):
        (tmp_path / name).mkdir()
    env = {name: value for name, value in os.environ.items() if name not in ("TIKTOKEN_CACHE_DIR", "PYTHONPATH")}
    env.update(HOME=str(tmp_path / "home"), TMPDIR=str(tmp_path / "tmp"), HF_HUB_OFFLINE="1")
    env["PYTHONPATH"] = str(tmp_path / "site")  # the wheel's modules, ahead of the checkout (not on the path here)
    result = subprocess.run(
        [sys.executable, "-c", WHEEL_SCRIPT], cwd=tmp_path / "home", env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["folder"].startswith(str(tmp_path / "site"))
    text = "Every effort moves you <|endoftext|>"
    assert out["ids"] == out["hf"] == encoding.encode(text, allowed_special="all")


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


@pytest.mark.parametrize("context_length", [128, 1024])
def test_saved_tokenizer_truncates_at_the_models_context(tmp_path, context_length):
    tokenization_gpt2edu.save_gpt2_tokenizer(tmp_path, model_max_length=context_length)
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert tokenizer.model_max_length == context_length
    assert len(tokenizer("Every effort moves you " * 400, truncation=True).input_ids) == context_length
    built = tokenization_gpt2edu.gpt2_tokenizer(model_max_length=context_length)
    assert built.model_max_length == context_length
