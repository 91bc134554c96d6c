"""train_accelerate.py's data: the corpus read with `datasets`, tokenized with tiktoken, packed into blocks.

A .txt file is one running text read line by line; .json, .jsonl and .parquet rows, and Hub datasets, are documents,
joined with `<|endoftext|>` as in GPT-2's own data. The token stream is cut into blocks of exactly `block_size`
tokens, the examples the model trains on. A corpus datasets cannot read is reported in one line naming the file and
the line or byte at fault.
"""

import argparse
import codecs
import itertools
import json
import math
import os
import warnings
from pathlib import Path

import datasets
import pyarrow as pa

from tokenization_gpt2edu import tiktoken_encoding

from .cli import UsageError

# torchdata's StatefulDataLoader calls a torch function that torch 2.13 deprecates, and warns at every loader start:
# noise in the progress a learner reads, about code that is not theirs (nor ours).
warnings.filterwarnings("ignore", message="'set_vital' is deprecated", category=UserWarning)

TOKENIZER_THREADS = os.cpu_count() or 1  # pieces of text tiktoken encodes at once
# What reading a corpus raises for a file it cannot read: while loading, and while training (a stream is read then).
READ_ERRORS = (OSError, ValueError, datasets.exceptions.DatasetGenerationError)
STREAM_ERRORS = (datasets.exceptions.DatasetGenerationError, UnicodeDecodeError, pa.ArrowInvalid)


def load_raw_datasets(
    args: argparse.Namespace, default_corpus: Path
) -> tuple[datasets.DatasetDict | datasets.IterableDatasetDict, bool]:
    """Read the corpus with datasets.load_dataset. Returns the splits and whether each row is a whole document."""
    if args.dataset_name:
        raw = datasets.load_dataset(args.dataset_name, args.dataset_config_name, streaming=args.streaming)
        return raw, True
    data_files = {"train": args.train_file or str(default_corpus)}
    if args.validation_file:
        data_files["validation"] = args.validation_file
    suffix = Path(data_files["train"]).suffix
    builder = {".txt": "text", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}[suffix]
    # A .txt file is one running text read line by line (newlines kept); json and parquet rows are documents.
    # memory: read text files 1 MB at a time (datasets' default is 10 MB)
    options = {"keep_linebreaks": True, "chunksize": 1 << 20} if builder == "text" else {}
    if not args.streaming and "validation" not in data_files:
        # run_clm's split: the first N% of the training file is held out for validation.
        full = datasets.load_dataset(builder, data_files=data_files, split="train", **options)
        n_validation = min(math.ceil(len(full) * args.validation_split_percentage / 100), len(full) - 1)
        splits = datasets.DatasetDict(
            train=full.select(range(n_validation, len(full))), validation=full.select(range(n_validation))
        )
        return splits, builder != "text"
    return datasets.load_dataset(
        builder, data_files=data_files, streaming=args.streaming, **options
    ), builder != "text"


def read_corpus(args: argparse.Namespace, default_corpus: Path):
    """`load_raw_datasets`, with a file datasets cannot read reported as a UsageError naming the file and place."""
    try:
        return load_raw_datasets(args, default_corpus)
    except READ_ERRORS as error:
        raise UsageError(describe_data_error(args, error)) from None


def running_text_pieces(lines: list[str], n_pieces: int) -> list[str]:
    """Join consecutive lines into about `n_pieces` texts that tiktoken encodes, one after the other, exactly as it
    encodes all the lines joined.

    GPT-2's pre-tokenizer splits text with a regular expression that looks ahead but never behind. A line break
    between two non-space characters ("...end.\nNext...") is a pre-token of its own, whatever comes before or after
    it: a text may be cut right after such a line break and each part encoded alone.
    """
    target = max(1, len(lines) // n_pieces)  # lines per piece
    pieces, start = [], 0
    for i in range(target, len(lines)):
        if i - start < target:
            continue
        before, after = lines[i - 1], lines[i]
        if before[-1:] == "\n" and before[-2:-1].strip() and after[:1].strip():  # a safe cut
            pieces.append("".join(lines[start:i]))
            start = i
    pieces.append("".join(lines[start:]))
    return pieces


def tokenize_and_pack(raw, block_size: int, text_column: str, documents: bool):
    """Tokenize with tiktoken and cut the token stream into blocks of exactly `block_size` tokens.

    Returns the tokenized dataset (one row of ids per document, or per batch of lines) and the packed one.
    """
    encoding = tiktoken_encoding()

    # speed: both maps take and return Arrow tables, so datasets hands over a batch of rows as one table instead of
    # building a Python dict per line of text (2.8x the tokens per second streaming a .txt file; bench/bench_data.py)
    def tokenize(table: pa.Table) -> pa.Table:
        column = table[text_column]
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            raise UsageError(
                f"the {text_column!r} column holds {column.type}, not text; pass --text_column_name to name the "
                "column that holds the text"
            )
        texts = [text or "" for text in column.to_pylist()]  # a null is an empty document
        if documents:  # tiktoken's batch encoder; documents are joined with <|endoftext|>, as in GPT-2's data
            ids = [doc + [encoding.eot_token] for doc in encoding.encode_ordinary_batch(texts)]
        else:
            # Consecutive lines of a text file are one running text: no token may be cut at a line break. speed: cut
            # only where that cannot happen, and encode the pieces in parallel, on tiktoken's thread pool.
            pieces = encoding.encode_ordinary_batch(running_text_pieces(texts, TOKENIZER_THREADS))
            ids = [list(itertools.chain.from_iterable(pieces))]
        return pa.table({"input_ids": pa.array(ids, pa.list_(pa.int32()))})

    def pack(table: pa.Table) -> pa.Table:
        # Concatenate the batch's tokens and cut full blocks; like run_clm, the tail of each batch is dropped.
        tokens = table["input_ids"].combine_chunks().flatten()
        usable = len(tokens) // block_size * block_size
        offsets = pa.array(range(0, usable + 1, block_size), pa.int32())  # block i is tokens[offsets[i]:offsets[i+1]]
        return pa.table({"input_ids": pa.ListArray.from_arrays(offsets, tokens.slice(0, usable))})

    # The returned table holds only input_ids: every other column of the corpus is dropped.
    tokenized = raw.with_format("arrow").map(tokenize, batched=True, batch_size=1000 if documents else 10_000)
    packed = tokenized.map(pack, batched=True, batch_size=1000 if documents else 1)
    return tokenized.with_format(None), packed.with_format(None)  # rows as Python lists again


def build_datasets(args: argparse.Namespace, raw, documents: bool, block_size: int):
    """Train and validation datasets of packed blocks; raises UsageError for a corpus too short for one block."""
    text_column = args.text_column_name or "text"
    train_raw = raw["train"]
    if train_raw.column_names is not None and text_column not in train_raw.column_names:
        raise UsageError(
            f"no column {text_column!r} in the data (columns: {train_raw.column_names}); pass --text_column_name"
        )
    tokenized, train = tokenize_and_pack(train_raw, block_size, text_column, documents)
    n_eval = args.eval_iters * args.per_device_eval_batch_size
    if "validation" in raw:
        validation = tokenize_and_pack(raw["validation"], block_size, text_column, documents)[1]
    else:  # a stream has no length to take a percentage of: hold out its first evaluation's worth of blocks
        validation, train = train.take(n_eval), train.skip(n_eval)
    if isinstance(train, datasets.Dataset):
        n_tokens = sum(len(ids) for ids in tokenized["input_ids"])
        if n_tokens < block_size + 1:
            what = "is empty" if n_tokens == 0 else f"has only {n_tokens} tokens"
            raise UsageError(f"the training corpus {what}; it needs at least block_size + 1 = {block_size + 1}")
        if len(validation) == 0:
            raise UsageError(
                f"the validation split has less than one block of {block_size} tokens; "
                "use a larger --validation_split_percentage or a smaller --block_size"
            )
        validation = validation.select(range(min(n_eval, len(validation))))
    return train, validation  # lists of ids: default_data_collator makes the batch tensors


def check_one_batch(args: argparse.Namespace, train_dataset, train_dataloader) -> None:
    """Refuse training data that holds less than one batch (a loader without batches would loop forever)."""
    if not args.streaming and len(train_dataloader) == 0:
        raise UsageError(
            f"the training data holds {len(train_dataset)} blocks of {args.block_size} tokens, less than one batch of "
            f"--per_device_train_batch_size {args.per_device_train_batch_size}; use a smaller batch size or "
            "--block_size, or more data"
        )


def no_batch_error(args: argparse.Namespace) -> UsageError:
    """A stream that ends before its first full batch, found only while training."""
    return UsageError(
        f"the training data holds no full batch of {args.per_device_train_batch_size} blocks of "
        f"{args.block_size} tokens; use a smaller --per_device_train_batch_size or --block_size, or more data"
    )


# --- describing a corpus that cannot be read ----------------------------------------------------------------------


def describe_data_error(args: argparse.Namespace, error: Exception) -> str:
    """One line for a corpus that datasets cannot read: the file, and the line or byte where it goes wrong."""
    for path in filter(None, (args.train_file, args.validation_file)):
        problem = find_file_problem(Path(path))
        if problem:
            which = "--train_file" if path == args.train_file else "--validation_file"
            return f"{which} {path!r} {problem}"
    cause = error
    while cause.__cause__ is not None or cause.__context__ is not None:
        cause = cause.__cause__ or cause.__context__
    return f"cannot read the training data: {str(error).splitlines()[0]} ({str(cause).splitlines()[0][:200]})"


def find_file_problem(path: Path) -> str | None:
    """What makes a corpus file unreadable: bytes that are not UTF-8, or (.json/.jsonl) a line that is not JSON."""
    problem = find_non_utf8(path)
    if problem or path.suffix not in (".json", ".jsonl"):
        return problem
    with path.open(encoding="utf-8") as f:
        for number, text in enumerate(f, 1):
            if not text.strip():
                continue
            try:
                json.loads(text)
            except ValueError as error:
                if number == 1 and path.suffix == ".json":
                    break  # maybe one JSON document over many lines: checked whole below
                return (
                    f"line {number} is not valid JSON ({error}); each line must be one JSON object, "
                    'like {"text": "..."}'
                )
        else:
            return None
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        return f"is not valid JSON ({error})"
    return None


def find_non_utf8(path: Path) -> str | None:
    """The first byte of a file that is not UTF-8, with its line, read 1 MB at a time; None for a UTF-8 file."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    line, offset = 1, 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as error:
                bad = offset + error.start
                line += chunk[: error.start].count(b"\n")
                return (
                    f"is not UTF-8 text: byte 0x{chunk[error.start]:02x} at line {line} (byte {bad}); "
                    "save it as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
                )
            line += chunk.count(b"\n")
            offset += len(chunk)
    return None
