"""GPT-2's tokenizer as a Hugging Face tokenizer, built from tiktoken.

The seed tokenizes with tiktoken's `gpt2` encoding: it is fast, and it is what the rest of this project uses for bulk
tokenization. A model on the Hugging Face Hub, though, is expected to come with a tokenizer that
`AutoTokenizer.from_pretrained(folder)` can load with plain transformers: no tiktoken download and no custom code.

`gpt2_tokenizer()` builds that tokenizer from tiktoken's own BPE ranks and split pattern, so the two give exactly
the same token ids on any text. `save_pretrained` writes it as `tokenizer.json`, which the `tokenizers` library
reads on its own.

Tools built for OpenAI's own GPT-2 folders (transformers 4.x, llama.cpp's `convert_hf_to_gguf.py`, optimum) expect the
files `openai-community/gpt2` ships: `save_gpt2_tokenizer(folder, openai_layout=True)` writes those.

An instruction model (the book's chapter 7) reads its prompts in the Alpaca format. `gpt2_tokenizer(chat_template=
"alpaca")` carries that format as a chat template (gpt2edu/chat_templates/alpaca.jinja), so `apply_chat_template`,
TRL's `SFTTrainer` and `pipeline("text-generation")` write the book's prompts; `save_pretrained` saves it as
`chat_template.jinja` beside the tokenizer, and `add_chat_template` adds it to a tokenizer or a saved folder.
"""

import functools
import hashlib
import json
import os
import shutil
from importlib.metadata import version
from importlib.resources import files
from pathlib import Path

import tiktoken
from tiktoken.load import data_gym_to_mergeable_bpe_ranks
from tiktoken_ext.openai_public import r50k_pat_str
from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers, processors
from tokenizers.models import BPE
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast
from transformers.convert_slow_tokenizer import TikTokenConverter

import gpt2edu_bpe
from gpt2edu.files import atomic_write

ENDOFTEXT = "<|endoftext|>"  # GPT-2's only special token (id 50256): it separates documents
CONTEXT_LENGTH = 1024  # GPT-2's context window, in tokens
CHAT_TEMPLATES = ("alpaca",)  # the chat templates that ship with gpt2edu, as gpt2edu/chat_templates/NAME.jinja
CHAT_TEMPLATE_FILE = "chat_template.jinja"  # where transformers reads a saved tokenizer's chat template


# GPT-2's BPE files ship with the project (the gpt2edu_bpe folder), with the SHA-256 tiktoken checks them against.
BPE_FOLDER = Path(gpt2edu_bpe.__file__).parent
BPE_FILES = {
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
}


@functools.cache
def tiktoken_encoding() -> tiktoken.Encoding:
    """Return tiktoken's `gpt2` encoding, built from the BPE files that ship with gpt2edu (no download, no cache).

    It is the encoding `tiktoken.get_encoding("gpt2")` returns: OpenAI's merges and vocabulary (checked against their
    SHA-256), GPT-2's split pattern and `<|endoftext|>` as id 50256.

    Returns:
        The encoding; use it for bulk tokenization, e.g. `encoding.encode_ordinary_batch(texts)`.

    Raises:
        OSError: If the shipped files are missing or damaged.
    """
    try:
        ranks = data_gym_to_mergeable_bpe_ranks(
            vocab_bpe_file=str(BPE_FOLDER / "vocab.bpe"),
            encoder_json_file=str(BPE_FOLDER / "encoder.json"),
            vocab_bpe_hash=BPE_FILES["vocab.bpe"],
            encoder_json_hash=BPE_FILES["encoder.json"],
        )
    except (OSError, ValueError) as error:  # a missing file, or one whose hash does not match
        raise OSError(
            f"GPT-2's BPE files in {BPE_FOLDER} are missing or damaged ({error}); reinstall gpt2edu"
        ) from error
    return tiktoken.Encoding(
        name="gpt2",
        pat_str=r50k_pat_str,
        mergeable_ranks=ranks,
        special_tokens={ENDOFTEXT: 50256},
        explicit_n_vocab=50257,
    )


class _EncodingConverter(TikTokenConverter):
    """`TikTokenConverter` that reads the BPE ranks of a loaded tiktoken encoding instead of a `.tiktoken` file."""

    def __init__(self, encoding: tiktoken.Encoding) -> None:
        # HF: the converter's default split pattern is a newer model's; GPT-2 needs its own. tiktoken keeps the
        # pattern and the ranks in private attributes, as it has no public accessor for them.
        super().__init__(pattern=encoding._pat_str, extra_special_tokens=[ENDOFTEXT])
        self.encoding = encoding

    def load_tiktoken_bpe(self, tiktoken_url: str) -> dict[bytes, int]:
        """Return the encoding's ranks (token bytes -> id); the base class would read them from a file."""
        return self.encoding._mergeable_ranks


def gpt2_tokenizer(
    model_max_length: int = CONTEXT_LENGTH, chat_template: str | None = None
) -> PreTrainedTokenizerFast:
    """Build GPT-2's tokenizer as a fast Hugging Face tokenizer, with exactly tiktoken's token ids.

    `<|endoftext|>` is always read as the special token (id 50256), like tiktoken's
    `encode(text, allowed_special="all")`.

    Args:
        model_max_length: The model's context, in tokens: where `tokenizer(text, truncation=True)` cuts.
        chat_template: The name of a chat template that ships with gpt2edu (`CHAT_TEMPLATES`: "alpaca", the book's
            chapter-7 prompt), for an instruction model; None for none.

    Returns:
        A new tokenizer; `save_pretrained` writes it for plain `AutoTokenizer.from_pretrained`.
    """
    encoding = tiktoken_encoding()
    # Byte-level BPE with tiktoken's ranks; `<|endoftext|>` is appended after the 50256 ranks, so it gets id 50256.
    backend = _EncodingConverter(encoding).converted()
    # HF: `PreTrainedTokenizerFast` (transformers 5 calls it `TokenizersBackend`) loads tokenizer.json as it is.
    # A model class such as `GPT2Tokenizer` would rebuild its own pipeline from the vocabulary and merges instead.
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        model_max_length=model_max_length,
        bos_token=ENDOFTEXT,
        eos_token=ENDOFTEXT,
        # GPT-2 has no pad token, and we leave it unset: using `<|endoftext|>` would make collators such as
        # `DataCollatorForLanguageModeling` drop every real document boundary from the loss. Batched code that pads
        # chooses a pad token itself.
        clean_up_tokenization_spaces=False,  # decode must give back the exact text, spaces included
    )
    if chat_template is not None:
        tokenizer.chat_template = read_chat_template(chat_template)
    return tokenizer


def openai_gpt2_backend() -> Tokenizer:
    """GPT-2's byte-level BPE built from OpenAI's two files, as the `tokenizer.json` of `openai-community/gpt2`.

    OpenAI's 50,000 merges and the byte-level pre-tokenizer (GPT-2's split pattern), as transformers' own GPT-2
    converter builds them; its ids equal tiktoken's. The `tokenizer.json` of `gpt2_tokenizer()` computes the same ids
    from tiktoken's ranks instead, which list every merge that makes each token (108,299 of them).
    """
    vocab, merges = BPE.read_file(str(BPE_FOLDER / "encoder.json"), str(BPE_FOLDER / "vocab.bpe"))
    backend = Tokenizer(BPE(vocab, merges, continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)  # adds no token: GPT-2 adds no BOS or EOS
    backend.add_special_tokens([AddedToken(ENDOFTEXT, special=True, normalized=True)])  # already id 50256
    return backend


def save_openai_layout(folder: Path) -> None:
    """Write GPT-2's tokenizer as `openai-community/gpt2` ships it: vocab.json, merges.txt and tokenizer.json.

    tokenizer_config.json names `GPT2Tokenizer`, a class transformers 4.x's `AutoTokenizer` knows (it loads
    `GPT2TokenizerFast` from tokenizer.json) as does transformers 5's; the generic `TokenizersBackend` that
    transformers 5 writes for `gpt2_tokenizer()` is unknown to 4.x.
    """
    # OpenAI's own two files, under the names Hugging Face gives them.
    shutil.copyfile(BPE_FOLDER / "encoder.json", folder / "vocab.json")
    shutil.copyfile(BPE_FOLDER / "vocab.bpe", folder / "merges.txt")
    openai_gpt2_backend().save(str(folder / "tokenizer.json"))
    config = {
        "tokenizer_class": "GPT2Tokenizer",
        "model_max_length": CONTEXT_LENGTH,
        "bos_token": ENDOFTEXT,
        "eos_token": ENDOFTEXT,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,  # decode must give back the exact text, spaces included
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def tokenizer_cache_dir() -> Path:
    """Where `save_gpt2_tokenizer` keeps its copy: $GPT2EDU_CACHE, else gpt2edu/ in the user's cache folder."""
    if "GPT2EDU_CACHE" in os.environ:
        return Path(os.environ["GPT2EDU_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gpt2edu"


def save_gpt2_tokenizer(
    folder: str | os.PathLike,
    model_max_length: int = CONTEXT_LENGTH,
    openai_layout: bool = False,
    chat_template: str | None = None,
) -> None:
    """Write GPT-2's tokenizer files (what `gpt2_tokenizer(model_max_length).save_pretrained(folder)` writes).

    speed: building the tokenizer derives 50,000 BPE merges in Python (about half a second, a third of a checkpoint
    conversion). The files it saves are the same every time for the same libraries, so the first call keeps a copy
    in the cache folder, keyed by the library versions and this file's code, and later calls copy that.

    Args:
        folder: An existing folder.
        model_max_length: The model's context, in tokens: where `tokenizer(text, truncation=True)` cuts.
        openai_layout: Write the files `openai-community/gpt2` ships instead (`save_openai_layout`), for GPT-2
            folders that tools built for OpenAI's read: the same token ids.
        chat_template: The name of a chat template that ships with gpt2edu, written as `chat_template.jinja` (what
            `save_pretrained` writes for a tokenizer with a template); None for none.
    """
    libraries = [f"{name}=={version(name)}" for name in ("tiktoken", "tokenizers", "transformers")]
    key = hashlib.sha256(" ".join(libraries).encode() + Path(__file__).read_bytes()).hexdigest()[:16]
    cached = tokenizer_cache_dir() / f"gpt2-tokenizer-{'openai-' if openai_layout else ''}{key}"
    save = save_openai_layout if openai_layout else lambda into: gpt2_tokenizer().save_pretrained(into)
    if not cached.is_dir():
        building = cached.with_name(f"{cached.name}.tmp{os.getpid()}")
        try:
            # Saved beside its final name, then renamed: no reader ever sees a half-written copy.
            building.mkdir(parents=True)
            save(building)
            building.rename(cached)
        except OSError:
            if not cached.is_dir():  # rather than another process having cached it first, no writable cache
                save(Path(folder))
        finally:
            shutil.rmtree(building, ignore_errors=True)
    if cached.is_dir():
        for file in cached.iterdir():
            shutil.copyfile(file, Path(folder) / file.name)
    set_model_max_length(Path(folder), model_max_length)
    if chat_template is not None:
        (Path(folder) / CHAT_TEMPLATE_FILE).write_text(read_chat_template(chat_template), encoding="utf-8")


def set_model_max_length(folder: Path, model_max_length: int) -> None:
    """Write the model's context into a saved tokenizer_config.json (the cached copy says GPT-2's)."""
    if model_max_length == CONTEXT_LENGTH:
        return
    config_file = folder / "tokenizer_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config["model_max_length"] = model_max_length
    config_file.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# --- chat templates: the book's chapter-7 prompt format --------------------------------------------------------------


def read_chat_template(name: str) -> str:
    """The text of a chat template that ships with gpt2edu ("alpaca": the book's chapter-7 prompt format)."""
    if name not in CHAT_TEMPLATES:
        raise ValueError(f"unknown chat template {name!r}; gpt2edu ships: {', '.join(CHAT_TEMPLATES)}")
    return (files("gpt2edu") / "chat_templates" / f"{name}.jinja").read_text(encoding="utf-8")


def alpaca_messages(entry: dict[str, str]) -> list[dict[str, str]]:
    """One of the book's instruction entries ({"instruction", "input", "output"}) as messages for the template.

    The instruction is a user message; a non-empty input is a second user message right after it (the template
    writes it under "### Input:"); the output, where the entry has one, is the assistant's message.
    """
    messages = [{"role": "user", "content": entry["instruction"]}]
    if entry.get("input"):
        messages.append({"role": "user", "content": entry["input"]})
    if "output" in entry:
        messages.append({"role": "assistant", "content": entry["output"]})
    return messages


def check_chat_template_fits(tokenizer: PreTrainedTokenizerBase, vocab_size: int | None = None) -> None:
    """Refuse a tokenizer (and model) that cannot hold our chat templates.

    Each response ends with the tokenizer's end-of-text token (GPT-2's `<|endoftext|>`, id 50256): the model learns
    to write it and generation stops at it. So the tokenizer must have that token, as one token, and the model's
    vocabulary (`vocab_size`, when given) must reach its id.

    Raises:
        ValueError: Naming what is missing.
    """
    eos = tokenizer.eos_token
    eos_id = tokenizer.convert_tokens_to_ids(eos) if eos is not None else None
    if eos is None or eos_id is None or eos_id == tokenizer.unk_token_id:
        raise ValueError(
            "a chat template needs an end-of-text token to end each response, and this tokenizer has none; "
            "use GPT-2's tokenizer (tokenization_gpt2edu.gpt2_tokenizer())"
        )
    if vocab_size is not None:
        check_vocabulary_ends_responses(vocab_size, eos, eos_id)


def check_vocabulary_ends_responses(vocab_size: int, eos: str = ENDOFTEXT, eos_id: int = 50256) -> None:
    """Refuse a model whose vocabulary stops short of the token that ends each response (ValueError)."""
    if eos_id >= vocab_size:
        raise ValueError(
            f"a chat template ends each response with {eos} (id {eos_id}), but the model's vocabulary has only "
            f"{vocab_size} tokens (vocab_size {vocab_size}); an instruction model needs GPT-2's {eos_id + 1}"
        )


def add_chat_template(
    target: PreTrainedTokenizerBase | str | os.PathLike, name: str = "alpaca"
) -> PreTrainedTokenizerBase | None:
    """Give a tokenizer, or a saved model folder, the chat template `name` (the book's Alpaca prompt by default).

    Args:
        target: A tokenizer (it gets `chat_template`; `save_pretrained` then writes chat_template.jinja), or a folder
            holding a saved tokenizer (and the model's config.json, whose vocab_size is checked): chat_template.jinja
            is written into it, replacing one that is there.
        name: One of `CHAT_TEMPLATES`.

    Returns:
        The tokenizer, when `target` is one; None for a folder.

    Raises:
        ValueError: For an unknown name, or a tokenizer or model that cannot hold the template
            (`check_chat_template_fits`).
    """
    template = read_chat_template(name)
    if isinstance(target, PreTrainedTokenizerBase):
        check_chat_template_fits(target)
        target.chat_template = template
        return target
    from transformers import AutoTokenizer

    folder = Path(target)
    config_file = folder / "config.json"
    config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
    check_chat_template_fits(AutoTokenizer.from_pretrained(folder), config.get("vocab_size"))
    with atomic_write(folder, into=True) as staging:
        (staging / CHAT_TEMPLATE_FILE).write_text(template, encoding="utf-8")
    return None
