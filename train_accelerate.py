"""Train gpt2edu: the seed's train.py on the Hugging Face ecosystem.

`datasets` reads (or streams) the corpus, tiktoken tokenizes it, and the tokens are packed into fixed blocks;
Accelerate runs the loop on a CPU, one GPU, several GPUs or several machines, and saves checkpoints that resume
exactly. With no arguments it trains a small model on the corpus that ships with the project:

    python train_accelerate.py                       # writes ./gpt2edu-out
    python run_inference.py --model gpt2edu-out --prompt "Every effort moves you"

The flags follow transformers' examples/pytorch/language-modeling/run_clm_no_trainer.py wherever one exists.
"""

import argparse
import contextlib
import dataclasses
import errno
import itertools
import json
import math
import os
import pickle
import shlex
import shutil
import signal
import sys
import tempfile
import time
import warnings
from pathlib import Path

import datasets
import pyarrow as pa
import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.tracking import get_available_trackers
from accelerate.utils import DistributedType, LoggerType, set_seed
from safetensors import SafetensorError
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, default_data_collator, get_scheduler

from configuration_gpt2edu import GPT2EduConfig
from convert_checkpoint import ordinary_permissions, push_to_hub
from modeling_gpt2edu import GPT2EduForCausalLM
from run_inference import OneLineErrorParser, load_checked_model
from tokenization_gpt2edu import gpt2_tokenizer, tiktoken_encoding

# torchdata's StatefulDataLoader calls a torch function that torch 2.13 deprecates, and warns at every loader start:
# noise in the progress a learner reads, about code that is not theirs (nor ours).
warnings.filterwarnings("ignore", message="'set_vital' is deprecated", category=UserWarning)

DEFAULT_CORPUS = Path(__file__).resolve().parent / "data" / "default_corpus.txt"
TOKENIZER_THREADS = os.cpu_count() or 1  # pieces of text tiktoken encodes at once
# A model small enough to learn the default corpus in about a minute on a laptop CPU.
SMALL_MODEL = "emb_dim=128,n_heads=4,n_layers=4,context_length=128"
SCHEDULERS = ["linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup"]


class UsageError(Exception):
    """Bad input from the user: reported as one line on stderr with exit code 2."""


# --- command line -------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = OneLineErrorParser(description="Train a gpt2edu model with datasets and Accelerate.")
    data = parser.add_argument_group("data")
    data.add_argument("--dataset_name", default=None, help="a dataset on the Hub, read with datasets.load_dataset")
    data.add_argument("--dataset_config_name", default=None, help="the dataset's configuration name")
    data.add_argument("--train_file", default=None, help=".txt, .json, .jsonl or .parquet (default: shipped corpus)")
    data.add_argument("--validation_file", default=None, help="same formats; default: split off the training data")
    data.add_argument("--validation_split_percentage", type=int, default=5, help="%% of train held out (default 5)")
    data.add_argument("--text_column_name", default=None, help="column holding the text (default: 'text')")
    data.add_argument("--block_size", type=int, default=None, help="tokens per training example (default: context)")
    data.add_argument("--streaming", action="store_true", help="stream the corpus instead of materialising it")
    model = parser.add_argument_group("model")
    model.add_argument("--model_name_or_path", default=None, help="start from this model instead of from scratch")
    model.add_argument(
        "--config_overrides",
        default=None,
        help=f"config of a new model, e.g. 'emb_dim=64,n_layers=2' (default: '{SMALL_MODEL}'; '' for GPT-2 124M)",
    )
    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--per_device_train_batch_size", type=int, default=8)
    optim.add_argument("--per_device_eval_batch_size", type=int, default=8)
    optim.add_argument("--learning_rate", type=float, default=None, help="default 1e-3, or 2e-3 on the shipped corpus")
    optim.add_argument("--weight_decay", type=float, default=0.1)
    optim.add_argument("--num_train_epochs", type=int, default=None, help="default 1, or 40 on the shipped corpus")
    optim.add_argument("--max_train_steps", type=int, default=None, help="overrides --num_train_epochs")
    optim.add_argument("--gradient_accumulation_steps", type=int, default=1)
    optim.add_argument("--lr_scheduler_type", default="cosine", choices=SCHEDULERS)
    optim.add_argument("--num_warmup_steps", type=int, default=None, help="default: 5%% of the steps")
    optim.add_argument("--max_grad_norm", type=float, default=1.0, help="gradient clipping; 0 turns it off")
    optim.add_argument("--mixed_precision", default=None, choices=["no", "fp16", "bf16"], help="for Accelerate")
    optim.add_argument("--compile", action="store_true", help="torch.compile the model")
    optim.add_argument("--seed", type=int, default=123)
    run = parser.add_argument_group("evaluation, checkpoints and output")
    run.add_argument(
        "--eval_steps",
        type=int,
        default=None,
        help="evaluate every N steps (and at the end); default 50, or 40 on the shipped corpus",
    )
    run.add_argument("--eval_iters", type=int, default=20, help="batches per evaluation")
    run.add_argument("--logging_steps", type=int, default=10, help="log the training loss every N steps")
    run.add_argument("--sample_prompt", default="Every effort moves you", help="continued at each evaluation")
    run.add_argument("--checkpointing_steps", type=int, default=None, help="save a resumable state every N steps")
    run.add_argument("--resume_from_checkpoint", default=None, help="a step_N folder, or 'latest'")
    run.add_argument("--output_dir", default="gpt2edu-out")
    run.add_argument(
        "--overwrite_output_dir",
        action="store_true",
        help="train into an --output_dir that holds an earlier run, replacing its model and checkpoints",
    )
    run.add_argument("--push_to_hub", action="store_true", help="upload the final model to the Hub")
    run.add_argument("--hub_model_id", default=None, help="repository for --push_to_hub (default: output_dir name)")
    run.add_argument("--with_tracking", action="store_true", help="log metrics through Accelerate's trackers")
    run.add_argument("--report_to", default="all", help="tracker(s) for --with_tracking: tensorboard, wandb, ...")
    args = parser.parse_args(argv)
    fill_data_dependent_defaults(args)
    try:
        validate_args(args)
    except UsageError as error:
        parser.error(str(error))
    return args


def fill_data_dependent_defaults(args: argparse.Namespace) -> None:
    """Defaults that depend on the data: the shipped corpus is small (8,448 training tokens), so the demo run goes over
    it 40 times at a higher learning rate, evaluating more often, to show the model learning it within about three
    minutes on a 2-core CPU (training loss from 10.8 to about 1.3)."""
    shipped = not (args.train_file or args.dataset_name)
    if args.learning_rate is None:
        args.learning_rate = 2e-3 if shipped else 1e-3
    if args.eval_steps is None:
        args.eval_steps = 40 if shipped else 50


def validate_args(args: argparse.Namespace) -> None:
    """Refuse bad values before anything is read or written."""
    positive = [
        "per_device_train_batch_size",
        "per_device_eval_batch_size",
        "gradient_accumulation_steps",
        "eval_steps",
        "eval_iters",
        "logging_steps",
        "num_train_epochs",
        "max_train_steps",
        "checkpointing_steps",
        "block_size",
    ]
    for name in positive:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name} must be a positive integer, got {value}")
    for name in ("learning_rate", "weight_decay", "max_grad_norm"):
        if not math.isfinite(getattr(args, name)):
            raise UsageError(f"--{name} must be a finite number, got {getattr(args, name)}")
    if not args.learning_rate > 0:
        raise UsageError(f"--learning_rate must be positive, got {args.learning_rate}")
    if args.block_size is not None and args.block_size < 2:
        raise UsageError("--block_size must be at least 2: a block of one token has no next token to predict")
    if not 0 <= args.seed < 2**32:
        raise UsageError(f"--seed must be in 0..{2**32 - 1}, got {args.seed}")
    if not args.sample_prompt.strip():
        raise UsageError("--sample_prompt must not be empty: the model needs a text to continue at each evaluation")
    if not args.output_dir:
        raise UsageError("--output_dir must not be empty; name the folder to write the model into")
    if args.with_tracking:
        known, available = [t.value for t in LoggerType], [str(t) for t in get_available_trackers()]
        for name in filter(None, (part.strip() for part in args.report_to.split(","))):
            if name not in known:
                raise UsageError(f"--report_to {name!r} is not a tracker Accelerate knows; use one of {known}")
            if name != "all" and name not in available:
                raise UsageError(f"--report_to {name}: the package is not installed; pip install {name}")
    if args.weight_decay < 0 or args.max_grad_norm < 0 or (args.num_warmup_steps or 0) < 0:
        raise UsageError("--weight_decay, --max_grad_norm and --num_warmup_steps must not be negative")
    if not 0 < args.validation_split_percentage < 100:
        raise UsageError(f"--validation_split_percentage must be in 1..99, got {args.validation_split_percentage}")
    for name in ("train_file", "validation_file"):
        path = getattr(args, name)
        if path is not None and not os.path.isfile(path):
            raise UsageError(f"--{name} {path!r} does not exist")
        if path is not None and os.path.getsize(path) == 0:
            raise UsageError(f"--{name} {path!r} is empty")
        if path is not None and Path(path).suffix not in (".txt", ".json", ".jsonl", ".parquet"):
            raise UsageError(f"--{name} must be a .txt, .json, .jsonl or .parquet file, got {path!r}")
    if args.dataset_name and args.train_file:
        raise UsageError("pass either --dataset_name or --train_file, not both")
    if not (args.dataset_name or args.train_file or DEFAULT_CORPUS.is_file()):
        raise UsageError(
            f"no --train_file or --dataset_name, and the default corpus {DEFAULT_CORPUS} is not there (it comes with "
            "a clone of the repository, not with an installed wheel); pass --train_file or --dataset_name"
        )
    if args.model_name_or_path and args.config_overrides:
        raise UsageError("--config_overrides builds a new model; it cannot be combined with --model_name_or_path")
    if args.push_to_hub and not (args.hub_model_id or args.output_dir):
        raise UsageError("--push_to_hub needs --hub_model_id")


def parse_config_overrides(text: str) -> dict:
    """'emb_dim=64,n_layers=2,qkv_bias=true' -> {'emb_dim': 64, 'n_layers': 2, 'qkv_bias': True}."""
    fields = {f.name: f for f in dataclasses.fields(GPT2EduConfig) if f.name in GPT2EduConfig.__annotations__}
    overrides = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or key not in fields:
            known = "vocab_size, context_length, emb_dim, n_heads, n_layers, drop_rate, qkv_bias, tie_word_embeddings"
            raise UsageError(
                f"--config_overrides: unknown or malformed {item!r}; use key=value with keys among {known}"
            )
        default = fields[key].default
        try:
            if isinstance(default, bool):
                if raw.strip().lower() not in ("true", "false", "1", "0"):
                    raise ValueError(raw)
                overrides[key] = raw.strip().lower() in ("true", "1")
            elif isinstance(default, int):
                overrides[key] = int(raw)
            else:
                overrides[key] = float(raw)
        except ValueError:
            raise UsageError(f"--config_overrides: {key}={raw!r} is not a valid {type(default).__name__}") from None
    return overrides


# --- data ---------------------------------------------------------------------------------------------------------


def load_raw_datasets(args: argparse.Namespace) -> tuple[datasets.DatasetDict | datasets.IterableDatasetDict, bool]:
    """Read the corpus with datasets.load_dataset. Returns the splits and whether each row is a whole document."""
    if args.dataset_name:
        raw = datasets.load_dataset(args.dataset_name, args.dataset_config_name, streaming=args.streaming)
        return raw, True
    data_files = {"train": args.train_file or str(DEFAULT_CORPUS)}
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
    import codecs

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
    if path.suffix in (".json", ".jsonl"):
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


# --- model and state ----------------------------------------------------------------------------------------------


def build_model(args: argparse.Namespace, config: GPT2EduConfig | None = None) -> GPT2EduForCausalLM:
    if config is not None:
        return GPT2EduForCausalLM(config)
    if args.model_name_or_path:
        name = os.path.expanduser(args.model_name_or_path)
        # A Hub id is "name" or "owner/name": anything else that is not a folder is a path that does not exist (the
        # Hub client would answer "Repo id must be in the form ...").
        looks_local = name.startswith((".", "/")) or name.count("/") > 1 or "\\" in name
        if looks_local and not os.path.isdir(name):
            raise UsageError(f"--model_name_or_path {args.model_name_or_path!r}: no such folder")
        try:
            return load_checked_model(name)
        except (OSError, ValueError, SafetensorError) as error:
            where = "" if os.path.isdir(name) else " (no such folder, nor a model of that name on the Hub)"
            raise UsageError(
                f"cannot load --model_name_or_path {name!r}{where}: {str(error).splitlines()[0][:300]}"
            ) from None
    overrides = parse_config_overrides(SMALL_MODEL if args.config_overrides is None else args.config_overrides)
    try:
        config = GPT2EduConfig(**overrides)
    except ValueError as error:
        raise UsageError(f"--config_overrides: {error}") from error
    return GPT2EduForCausalLM(config)


def build_optimizer(model: torch.nn.Module, args: argparse.Namespace) -> torch.optim.AdamW:
    """AdamW, decaying the matrices (linear and embedding weights) but not the biases and LayerNorm parameters."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=args.learning_rate, betas=(0.9, 0.95))


def find_checkpoint(output_dir: str, which: str) -> Path:
    """Resolve --resume_from_checkpoint: 'latest' is the highest complete step_N folder in output_dir."""
    if which != "latest":
        path = Path(which)
        if not (path / "trainer_state.json").is_file():
            raise UsageError(f"--resume_from_checkpoint {which!r} is not a checkpoint folder (no trainer_state.json)")
        return path
    steps = [
        p for p in Path(output_dir).glob("step_*") if p.name[5:].isdigit() and (p / "trainer_state.json").is_file()
    ]
    if not steps:
        raise UsageError(
            f"--resume_from_checkpoint latest: no checkpoint in {output_dir!r}; "
            "train with --checkpointing_steps N first"
        )
    return max(steps, key=lambda p: int(p.name[5:]))


STAGING_PATTERNS = (".final-*", "step_*.tmp")  # what a run killed while saving leaves behind


def check_output_dir(args: argparse.Namespace) -> None:
    """Refuse an output folder that cannot be written, or that holds an earlier run not being resumed or overwritten.

    Runs before any data is read: a bad folder should not cost the minutes of loading a corpus.
    """
    out = Path(args.output_dir)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--output_dir {args.output_dir!r} is a file, not a folder; choose another --output_dir")
    parent = next((p for p in [out.absolute(), *out.absolute().parents] if p.exists()), None)
    if parent is None or not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(
            f"--output_dir {args.output_dir!r} cannot be created or written ({parent} is not a writable folder); "
            "choose another --output_dir"
        )
    source = Path(args.model_name_or_path) if args.model_name_or_path else None
    if source is not None and source.is_dir() and out.is_dir() and os.path.samefile(source, out):
        raise UsageError(
            f"--output_dir {args.output_dir!r} is the folder --model_name_or_path reads from: training would "
            "replace the model it starts from; choose another --output_dir"
        )
    if args.resume_from_checkpoint or args.overwrite_output_dir or not out.is_dir():
        return
    staging = {p for pattern in STAGING_PATTERNS for p in out.glob(pattern)}
    earlier = sorted(p.name for p in out.iterdir() if p not in staging)
    if earlier:
        shown = ", ".join(earlier[:3]) + (", ..." if len(earlier) > 3 else "")
        hint = "--resume_from_checkpoint latest to continue it, " if any(out.glob("step_*")) else ""
        raise UsageError(
            f"--output_dir {args.output_dir!r} already holds an earlier run ({shown}); pass --overwrite_output_dir "
            f"to replace it, {hint}or choose another --output_dir"
        )


def prepare_output_dir(args: argparse.Namespace, resuming: bool) -> None:
    """Create the output folder; remove what killed saves left behind and, with --overwrite_output_dir, the earlier
    run's checkpoints (a later --resume_from_checkpoint latest must not pick one of those)."""
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    stale = [p for pattern in STAGING_PATTERNS for p in out.glob(pattern)]
    if args.overwrite_output_dir and not resuming:
        stale += [p for p in out.glob("step_*") if p.is_dir()]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)


def check_checkpoint(checkpoint: Path, model: torch.nn.Module, accelerator: Accelerator) -> dict:
    """Refuse a checkpoint that would resume inexactly or not at all; returns its trainer state.

    Accelerate skips a missing random state or loader state with a log line, and the resumed run then differs from
    an uninterrupted one. Accelerate loads the pickles (random states, optimizer, scheduler, loader states) with
    torch.load(weights_only=True), which refuses one that would run code; it only logs that refusal for the random
    states, so those (and the scheduler) are loaded here first, the same way, to turn it into an error. What stays
    trusted is the checkpoint's numbers: a checkpoint written by someone else can hold any weights.
    """
    from accelerate.utils import load as accelerate_load

    sharded = accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
    needed = ["trainer_state.json"] + [f"random_states_{i}.pkl" for i in range(accelerator.num_processes)]
    if not sharded:
        needed += ["model.safetensors", "optimizer.bin", "scheduler.bin", "dl_state_dict.bin", "dl_state_dict_1.bin"]
    missing = [name for name in needed if not (checkpoint / name).is_file()]
    if missing:
        raise UsageError(
            f"checkpoint {str(checkpoint)!r} is incomplete (no {', '.join(missing)}"
            f"{'; it was written by a run of fewer processes' if 'random_states_1.pkl' in missing else ''}); "
            "resume from another step_N folder"
        )
    try:
        state = json.loads((checkpoint / "trainer_state.json").read_text())
        if not all(isinstance(state.get(key), int) and state[key] >= 0 for key in ("step", "epoch", "tokens_seen")):
            raise ValueError("step, epoch or tokens_seen missing")
    except (ValueError, AttributeError, UnicodeDecodeError) as error:
        raise UsageError(
            f"checkpoint {str(checkpoint)!r}: trainer_state.json is damaged ({str(error).splitlines()[0]}); "
            "resume from another step_N folder"
        ) from None
    for name in needed:
        if name.endswith((".pkl", ".bin")) and name.startswith(("random_states", "scheduler")):
            try:
                accelerate_load(checkpoint / name, map_location="cpu")
            except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as error:
                raise UsageError(
                    f"checkpoint {str(checkpoint)!r}: {name} cannot be loaded safely "
                    f"({str(error).splitlines()[0][:200]}); resume from another step_N folder"
                ) from None
    if not sharded:
        check_checkpoint_fits(checkpoint, model)
    return state


def save_checkpoint(accelerator: Accelerator, output_dir: str, state: dict) -> None:
    """accelerator.save_state into step_N.tmp, then an atomic rename: a run killed mid-save leaves step_N-1 intact."""
    final = Path(output_dir) / f"step_{state['step']}"
    tmp = final.with_name(final.name + ".tmp")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    with reporting_full_disk(f"saving checkpoint {final}", tmp):
        accelerator.save_state(str(tmp))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            (tmp / "trainer_state.json").write_text(json.dumps(state))
            ordinary_permissions(tmp)
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
    accelerator.wait_for_everyone()


RESUME_ADVICE = (
    "the earlier checkpoints and model are kept: free some space, then continue with --resume_from_checkpoint latest"
)


@contextlib.contextmanager
def reporting_full_disk(what: str, folder: Path, cleanup: bool = True, advice: str = RESUME_ADVICE):
    """Turn a full disk into a UsageError naming what was being saved, and remove the half-written `folder`.

    torch.save reports a full disk as a RuntimeError ("file write failed"), safetensors as its own error: both are
    recognised by the free space left, not only by errno.
    """
    try:
        yield
    except Exception as error:
        full = getattr(error, "errno", None) == errno.ENOSPC or "No space left" in str(error)
        try:
            full = full or shutil.disk_usage(folder if folder.is_dir() else folder.parent).free < 1 << 20
        except OSError:
            pass
        if cleanup:
            shutil.rmtree(folder, ignore_errors=True)
        if not full:
            raise
        raise UsageError(f"no space left on device while {what}; {advice}") from None


# --- model FLOPs utilisation -------------------------------------------------------------------------------------

# Dense bf16 peak of one GPU, FLOP/s, from the vendors' data sheets (H100 and H200 SXM share their compute).
GPU_PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12}


def flops_per_token(model, block_size: int) -> float:
    """Training FLOPs per token: 6 per matmul weight (forward + backward) plus attention's 12 * layers * width * T."""
    config = model.config
    embeddings = {"model.tok_emb.weight", "model.pos_emb.weight"}  # lookups, not matmuls
    matmul_params = sum(p.numel() for name, p in model.named_parameters() if name not in embeddings)
    if config.tie_word_embeddings:  # the output head is the token embedding, used as a matmul
        matmul_params += config.vocab_size * config.emb_dim
    return 6 * matmul_params + 12 * config.n_layers * config.emb_dim * block_size


def device_peak_flops(device: torch.device) -> float:
    """The device's peak: a known GPU's bf16 figure, or on a CPU a measured float32 matmul rate."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return next((peak for gpu, peak in GPU_PEAK_FLOPS.items() if gpu in name), float("nan"))
    a = torch.ones(1024, 1024)  # not randn: the global random state belongs to the run (resumes restore it)
    a @ a  # warm up
    start = time.perf_counter()
    for _ in range(10):
        a @ a
    return 10 * 2 * 1024**3 / (time.perf_counter() - start)


# --- evaluation ---------------------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(model, eval_dataloader, accelerator: Accelerator) -> tuple[float, float]:
    """Mean validation loss over the held-out blocks (gathered from every process) and its perplexity."""
    model.eval()
    losses = []
    for batch in eval_dataloader:
        loss = model(input_ids=batch["input_ids"], labels=batch["input_ids"]).loss
        losses.append(accelerator.gather_for_metrics(loss.repeat(batch["input_ids"].shape[0])))
    model.train()
    val_loss = torch.cat(losses).mean().item()
    return val_loss, math.exp(min(val_loss, 50.0))


@torch.no_grad()
def generate_sample(model, tokenizer, prompt: str, accelerator: Accelerator, max_new_tokens: int = 25) -> str:
    """The seed's generate_and_print_sample: a greedy continuation of the prompt, one line."""
    model = accelerator.unwrap_model(model)
    model.eval()
    input_ids = tokenizer(prompt, return_tensors="pt").input_ids.to(accelerator.device)
    max_new_tokens = min(max_new_tokens, model.config.context_length - input_ids.shape[1])
    output = model.generate(input_ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=50256)
    model.train()
    return tokenizer.decode(output[0]).replace("\n", " ")


# --- stopping on SIGTERM or Ctrl-C, and on divergence ------------------------------------------------------------

STOP_REQUESTED = False
STOP_SIGNAL = "SIGTERM"


def request_stop(signum, frame) -> None:
    """SIGTERM and SIGINT handler: finish the current step, save a checkpoint and the model, then exit cleanly.

    A second Ctrl-C stops at once (Python's KeyboardInterrupt), for a user who cannot wait for the save.
    """
    global STOP_REQUESTED, STOP_SIGNAL
    STOP_REQUESTED, STOP_SIGNAL = True, signal.Signals(signum).name
    if signum == signal.SIGINT:
        signal.signal(signal.SIGINT, signal.default_int_handler)


class TrainingDiverged(UsageError):
    """The loss or the weights became NaN or infinite: nothing more is saved."""


def weights_are_finite(model, accelerator: Accelerator) -> bool:
    """Whether every weight on every process is finite (a diverged run must not be saved over a good one)."""
    bad = sum(int(not torch.isfinite(p.detach()).all()) for p in model.parameters() if p.is_floating_point())
    return int(accelerator.reduce(torch.tensor(bad, device=accelerator.device), reduction="sum")) == 0


def diverged(args: argparse.Namespace, step: int, what: str) -> TrainingDiverged:
    checkpoints = [p for p in Path(args.output_dir).glob("step_*") if p.name[5:].isdigit()]
    kept = (
        f"the last checkpoint, {max(checkpoints, key=lambda p: int(p.name[5:])).name}, is kept"
        if checkpoints
        else "nothing was saved"
    )
    return TrainingDiverged(
        f"training diverged at step {step}: {what}; {kept}. Lower --learning_rate (now {args.learning_rate:g}) "
        f"or --max_grad_norm (now {args.max_grad_norm:g}) and train again"
    )


def resume_command() -> str:
    """This run's command line with --resume_from_checkpoint latest (replacing any it had)."""
    argv, kept = sys.argv[1:], []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--resume_from_checkpoint":
            skip = True
        elif not arg.startswith("--resume_from_checkpoint="):
            kept.append(arg)
    return shlex.join(["python", os.path.basename(sys.argv[0]), *kept, "--resume_from_checkpoint", "latest"])


# --- the loop -----------------------------------------------------------------------------------------------------


def describe_run(args: argparse.Namespace, model: GPT2EduForCausalLM, train_dataset, start_step: int) -> str:
    """One line before training: the model's size, the corpus in tokens, the steps and where the run writes."""
    config = model.config
    n_params = sum(p.numel() for p in model.parameters())
    shape = f"{config.n_layers} layers, emb_dim {config.emb_dim}, context {config.context_length}"
    tokens = "a streamed corpus" if args.streaming else f"{len(train_dataset) * args.block_size:,} training tokens"
    steps = f"steps {start_step + 1}-{args.max_train_steps}" if start_step else f"{args.max_train_steps} steps"
    return f"Training {n_params / 1e6:.1f}M parameters ({shape}) on {tokens}: {steps}, writing to {args.output_dir}/"


def train_loop(args, accelerator, model, optimizer, lr_scheduler, train_dataloader, eval_dataloader, tokenizer, state):
    """The seed's train_model_simple, on Accelerate: step, log, evaluate, sample, checkpoint; returns the history."""
    log_path = Path(args.output_dir) / "training_log.jsonl"
    progress = tqdm(total=args.max_train_steps, initial=state["step"], disable=not accelerator.is_local_main_process)
    window_loss, window_steps, window_tokens, window_start = 0.0, 0, 0, time.perf_counter()
    empty_epochs = 0
    # MFU: the FLOPs the model needs per token, against what all the devices could do at most
    flops_per_s_peak = device_peak_flops(accelerator.device) * accelerator.num_processes
    model_flops_per_token = flops_per_token(accelerator.unwrap_model(model), args.block_size)
    try:  # the progress bar ends its line before any message below it
        while state["step"] < args.max_train_steps and not STOP_REQUESTED:
            train_dataloader.set_epoch(state["epoch"])
            batches_this_epoch = 0
            for batch in train_dataloader:
                batches_this_epoch += 1
                with accelerator.accumulate(model):
                    loss = model(input_ids=batch["input_ids"], labels=batch["input_ids"]).loss
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and args.max_grad_norm > 0:
                        accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                    optimizer.step()
                    lr_scheduler.step()
                    optimizer.zero_grad()
                # One collective per micro-batch: tokens from every process, whether any process got SIGTERM or SIGINT,
                # and whether any loss is NaN or infinite.
                loss_value = loss.item()
                counts = accelerator.reduce(
                    torch.tensor(
                        [batch["input_ids"].numel(), STOP_REQUESTED, not math.isfinite(loss_value)],
                        device=accelerator.device,
                    ),
                    reduction="sum",
                )
                if counts[2]:
                    raise diverged(args, state["step"] + 1, "the training loss is not a number")
                state["tokens_seen"] += int(counts[0])
                window_tokens += int(counts[0])
                window_loss += loss_value / args.gradient_accumulation_steps
                if not accelerator.sync_gradients:
                    continue
                state["step"] += 1
                window_steps += 1
                progress.update(1)
                stop_now = bool(counts[1]) or state["step"] >= args.max_train_steps
                entry = None
                if state["step"] % args.logging_steps == 0 or state["step"] % args.eval_steps == 0 or stop_now:
                    train_loss = accelerator.reduce(
                        torch.tensor(window_loss / window_steps, device=accelerator.device), reduction="mean"
                    ).item()
                    tokens_per_s = window_tokens / (time.perf_counter() - window_start)
                    mfu = model_flops_per_token * tokens_per_s / flops_per_s_peak
                    progress.set_postfix(loss=f"{train_loss:.3f}", tok_s=f"{tokens_per_s:,.0f}", mfu=f"{mfu:.1%}")
                    entry = {
                        "step": state["step"],
                        "tokens_seen": state["tokens_seen"],
                        "train_loss": train_loss,
                        "lr": lr_scheduler.get_last_lr()[0],
                        "tokens_per_s": tokens_per_s,
                        "mfu": mfu,
                    }
                    window_loss, window_steps, window_tokens, window_start = 0.0, 0, 0, time.perf_counter()
                # No evaluation on SIGTERM: a preempted job has seconds, not minutes, before it is killed.
                at_eval = state["step"] % args.eval_steps == 0 or state["step"] >= args.max_train_steps
                if entry is not None and at_eval:
                    entry["val_loss"], entry["perplexity"] = evaluate(model, eval_dataloader, accelerator)
                    sharded = accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
                    sample = "" if sharded else generate_sample(model, tokenizer, args.sample_prompt, accelerator)
                    accelerator.print(
                        f"\nstep {state['step']}: train loss {entry['train_loss']:.3f}, "
                        f"val loss {entry['val_loss']:.3f} | {sample}"
                    )
                if entry is not None:
                    if accelerator.is_main_process:
                        with reporting_full_disk(f"writing {log_path}", log_path.parent, cleanup=False):
                            with log_path.open("a") as log:
                                log.write(json.dumps(entry) + "\n")
                    if args.with_tracking:
                        accelerator.log(entry, step=state["step"])
                if bool(counts[1]) or (args.checkpointing_steps and state["step"] % args.checkpointing_steps == 0):
                    if not weights_are_finite(model, accelerator):
                        raise diverged(args, state["step"], "the weights hold NaN or infinite values")
                    save_checkpoint(accelerator, args.output_dir, state)
                if stop_now:
                    progress.close()
                    if counts[1]:
                        accelerator.print(
                            f"{STOP_SIGNAL}: stopped at step {state['step']} with a checkpoint; continue with: "
                            f"{resume_command()}"
                        )
                    return
            empty_epochs = empty_epochs + 1 if batches_this_epoch == 0 else 0
            if empty_epochs == 2 or (empty_epochs == 1 and state["step"] == 0):
                raise UsageError(
                    f"the training data holds no full batch of {args.per_device_train_batch_size} blocks of "
                    f"{args.block_size} tokens; use a smaller --per_device_train_batch_size or --block_size, "
                    "or more data"
                )
            state["epoch"] += 1
    finally:
        progress.close()


# --- output -------------------------------------------------------------------------------------------------------


def model_card(model, args: argparse.Namespace, log: list[dict]) -> str:
    """A short README.md for the output folder: what the model is and how it was trained."""
    n_params = sum(p.numel() for p in model.parameters())
    last = log[-1] if log else {}
    data = args.dataset_name or (args.train_file and Path(args.train_file).name) or "the gpt2edu default corpus"
    config = {k: getattr(model.config, k) for k in ("emb_dim", "n_heads", "n_layers", "context_length", "vocab_size")}
    return (
        f"---\nlibrary_name: transformers\ntags: [gpt2edu, gpt2, text-generation]\n---\n\n"
        f"# {Path(args.hub_model_id or args.output_dir).name}\n\n"
        f"A GPT-2-architecture model ({n_params / 1e6:.1f}M parameters, {config}) trained from "
        f"{'`' + args.model_name_or_path + '`' if args.model_name_or_path else 'scratch'} on {data} "
        f"with gpt2edu's `train_accelerate.py`: {last.get('step', 0)} steps, {last.get('tokens_seen', 0):,} tokens, "
        f"final validation loss {last.get('val_loss', float('nan')):.3f}.\n\n"
        "```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n"
        "model = AutoModelForCausalLM.from_pretrained(REPO, trust_remote_code=True)\n"
        "tokenizer = AutoTokenizer.from_pretrained(REPO, trust_remote_code=True)\n```\n"
    )


def save_final_model(model, state_dict: dict, tokenizer, output_dir: str, card: str) -> None:
    """Write the Hugging Face folder (weights, config, code, tokenizer, card) into output_dir, each file atomically."""
    staging = Path(tempfile.mkdtemp(prefix=".final-", dir=output_dir))
    try:
        with reporting_full_disk(f"saving the model into {output_dir}", staging):
            model.save_pretrained(staging, state_dict=state_dict)
            tokenizer.save_pretrained(staging)
            (staging / "README.md").write_text(card)
        ordinary_permissions(staging)
        for path in staging.iterdir():
            os.replace(path, Path(output_dir) / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def plot_losses(log: list[dict], path: Path) -> None:
    """The seed's plot: training and validation loss against steps, tokens seen on a second axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([e["step"] for e in log], [e["train_loss"] for e in log], label="training loss")
    evaluated = [e for e in log if "val_loss" in e]
    ax.plot([e["step"] for e in evaluated], [e["val_loss"] for e in evaluated], "o-", label="validation loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    tokens_axis = ax.twiny()  # same curve, read against tokens seen
    tokens_axis.plot([e["tokens_seen"] for e in log], [e["train_loss"] for e in log], alpha=0)
    tokens_axis.set_xlabel("tokens seen")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# --- putting it together ------------------------------------------------------------------------------------------


def check_checkpoint_fits(checkpoint: Path, model: torch.nn.Module) -> None:
    """Refuse a checkpoint written for a model of another shape, naming the first tensor that differs."""
    from safetensors import safe_open

    weights = checkpoint / "model.safetensors"
    if not weights.is_file():  # FSDP and DeepSpeed save sharded states: Accelerate checks those itself
        return
    expected = model.state_dict()
    try:
        with safe_open(str(weights), framework="pt") as f:
            shapes = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    except (SafetensorError, OSError) as error:  # a damaged header, or a file shorter than its header says
        raise UsageError(
            f"checkpoint {str(checkpoint)!r}: model.safetensors is damaged ({str(error).splitlines()[0][:200]}); "
            "resume from another step_N folder"
        ) from None
    for name, shape in shapes.items():
        if name not in expected or tuple(expected[name].shape) != shape:
            mine = tuple(expected[name].shape) if name in expected else "absent"
            raise UsageError(
                f"checkpoint {str(checkpoint)!r} is from a different model: {name} is {shape} "
                f"there and {mine} here; use the same --config_overrides as the run that wrote it"
            )


def has_accelerator() -> bool:
    return torch.cuda.is_available() or torch.backends.mps.is_available()


def run(args: argparse.Namespace, raw=None, documents: bool = True, config: GPT2EduConfig | None = None) -> list[dict]:
    """Train as the arguments say and write the output folder; returns the training log (one dict per logged step).

    `raw` (datasets with a "train" and a "validation" split) and `config` replace what the arguments would load.
    """
    check_output_dir(args)
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        # HF: on a machine with no accelerator, `accelerate launch --multi_gpu` starts CPU ranks (DDP over gloo)
        # only when the script asks for the CPU.
        cpu=not has_accelerator(),
        dataloader_config=DataLoaderConfiguration(
            use_seedable_sampler=True, use_stateful_dataloader=True, dispatch_batches=False, data_seed=args.seed
        ),
        log_with=[name.strip() for name in args.report_to.split(",") if name.strip()] if args.with_tracking else None,
        project_dir=args.output_dir,
    )
    set_seed(args.seed)
    model = build_model(args, config)
    context = model.config.max_position_embeddings
    args.block_size = args.block_size or min(context, 1024)
    if args.block_size > context:
        raise UsageError(f"--block_size {args.block_size} is larger than the model's context ({context} tokens)")
    tokenizer = gpt2_tokenizer()
    if model.config.vocab_size < len(tokenizer):
        raise UsageError(
            f"the model's vocab_size is {model.config.vocab_size}, but the GPT-2 tokenizer has {len(tokenizer)} "
            f"tokens; use vocab_size={len(tokenizer)} or more (or leave it out of --config_overrides)"
        )
    n_prompt = len(tokenizer(args.sample_prompt).input_ids)
    if n_prompt >= model.config.context_length:
        raise UsageError(
            f"--sample_prompt is {n_prompt} tokens, the model's whole context is {model.config.context_length}: "
            "use a shorter prompt"
        )
    checkpoint = find_checkpoint(args.output_dir, args.resume_from_checkpoint) if args.resume_from_checkpoint else None
    if checkpoint is not None:
        checkpoint_state = check_checkpoint(checkpoint, model, accelerator)

    if raw is None:
        with accelerator.main_process_first():
            try:
                raw, documents = load_raw_datasets(args)
            except (OSError, ValueError, datasets.exceptions.DatasetGenerationError) as error:
                raise UsageError(describe_data_error(args, error)) from None
    train_dataset, eval_dataset = build_datasets(args, raw, documents, args.block_size)
    # Each loader draws its worker seed from a generator of its own: drawing it from torch's global generator when an
    # iterator starts would shift the dropout masks of a resumed run, which starts its iterator mid-epoch.
    train_dataloader = torch.utils.data.DataLoader(
        train_dataset,
        shuffle=not args.streaming,
        batch_size=args.per_device_train_batch_size,
        collate_fn=default_data_collator,
        drop_last=True,
        generator=torch.Generator().manual_seed(args.seed),
    )
    eval_dataloader = torch.utils.data.DataLoader(
        eval_dataset,
        batch_size=args.per_device_eval_batch_size,
        collate_fn=default_data_collator,
        generator=torch.Generator().manual_seed(args.seed),
    )
    optimizer = build_optimizer(model, args)
    if args.compile:
        model.compile()  # in place: unlike torch.compile(model), no wrapper, so the saved names stay the same
    model, optimizer, train_dataloader, eval_dataloader = accelerator.prepare(
        model, optimizer, train_dataloader, eval_dataloader
    )
    if not args.streaming and len(train_dataloader) == 0:
        raise UsageError(
            f"the training data holds {len(train_dataset)} blocks of {args.block_size} tokens, less than one batch of "
            f"--per_device_train_batch_size {args.per_device_train_batch_size}; use a smaller batch size or "
            "--block_size, or more data"
        )
    fresh_eval_state = eval_dataloader.state_dict()
    if args.max_train_steps is None:
        if args.streaming:
            raise UsageError("--streaming needs --max_train_steps: a stream's length is unknown in advance")
        epochs = args.num_train_epochs or (40 if not (args.train_file or args.dataset_name) else 1)
        args.max_train_steps = epochs * math.ceil(len(train_dataloader) / args.gradient_accumulation_steps)
    warmup = args.num_warmup_steps if args.num_warmup_steps is not None else args.max_train_steps // 20
    lr_scheduler = accelerator.prepare(
        get_scheduler(
            args.lr_scheduler_type,
            optimizer,
            num_warmup_steps=warmup * accelerator.num_processes,
            num_training_steps=args.max_train_steps * accelerator.num_processes,
        )
    )

    if accelerator.is_main_process:
        prepare_output_dir(args, resuming=checkpoint is not None)
    accelerator.wait_for_everyone()
    log_path = Path(args.output_dir) / "training_log.jsonl"
    state = {"step": 0, "epoch": 0, "tokens_seen": 0}
    if checkpoint is not None:
        try:
            accelerator.load_state(str(checkpoint))
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, KeyError) as error:
            raise UsageError(
                f"checkpoint {str(checkpoint)!r} cannot be restored ({str(error).splitlines()[0][:200]}); "
                "resume from another step_N folder"
            ) from None
        # The evaluation loader is saved after a full pass: restored as such, it would yield nothing. Every
        # evaluation starts from the top.
        eval_dataloader.load_state_dict(fresh_eval_state)
        state = checkpoint_state
        accelerator.print(f"Resuming from {checkpoint} (step {state['step']}, {state['tokens_seen']:,} tokens seen)")
    if accelerator.is_main_process:
        # Keep the log of the steps before the checkpoint; a killed run may have logged steps after it.
        kept = [line for line in read_log(log_path) if line["step"] <= state["step"]] if checkpoint else []
        log_path.write_text("".join(json.dumps(entry) + "\n" for entry in kept))
    if args.with_tracking:
        accelerator.init_trackers("gpt2edu", config={k: v for k, v in vars(args).items() if v is not None})

    accelerator.print(describe_run(args, accelerator.unwrap_model(model), train_dataset, state["step"]))
    previous_handlers = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        train_loop(
            args, accelerator, model, optimizer, lr_scheduler, train_dataloader, eval_dataloader, tokenizer, state
        )
    except (datasets.exceptions.DatasetGenerationError, UnicodeDecodeError, pa.ArrowInvalid) as error:
        raise UsageError(describe_data_error(args, error)) from None  # a streamed corpus is read during training
    finally:
        for sig, handler in previous_handlers.items():
            signal.signal(sig, handler)
    if not weights_are_finite(model, accelerator):
        raise diverged(args, state["step"], "the weights hold NaN or infinite values")

    accelerator.wait_for_everyone()
    log = read_log(log_path)
    unwrapped = accelerator.unwrap_model(model)
    state_dict = accelerator.get_state_dict(model)  # HF: gathers the full weights under FSDP / DeepSpeed ZeRO-3
    if accelerator.is_main_process:
        save_final_model(unwrapped, state_dict, tokenizer, args.output_dir, model_card(unwrapped, args, log))
        saved = "the model is saved; free some space and draw it again from training_log.jsonl"
        with reporting_full_disk("drawing loss.png", Path(args.output_dir), cleanup=False, advice=saved):
            plot_losses(log, Path(args.output_dir) / "loss.png")
        generate = f'python run_inference.py --model {args.output_dir} --prompt "{args.sample_prompt}"'
        accelerator.print(
            f"Done. Model: {args.output_dir}/  Loss plot: {args.output_dir}/loss.png  Generate: {generate}"
        )
        if args.push_to_hub:
            url = push_to_hub(Path(args.output_dir), args.hub_model_id or Path(args.output_dir).name)
            accelerator.print(f"Pushed to {url}")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return log


def read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line] if path.is_file() else []


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except UsageError as error:
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"{os.path.basename(sys.argv[0])}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C before training started (or a second one): nothing was saved after it
        print(f"{os.path.basename(sys.argv[0])}: interrupted; the checkpoints saved so far are kept", file=sys.stderr)
        return 130
    return 0


# --- the seed's library API ---------------------------------------------------------------------------------------


def train(
    text_data: str,
    num_epochs: int = 5,
    batch_size: int = 2,
    learning_rate: float = 0.0004,
    eval_freq: int = 5,
    start_context: str = "Every effort moves you",
    config: GPT2EduConfig | dict | None = None,
    output_dir: str | None = None,
):
    """The seed's train(): train on a string, 90% for training and 10% for validation, on this file's machinery.

    Args:
        text_data: The training text.
        num_epochs: Passes over the training blocks.
        batch_size: Blocks per step.
        learning_rate: AdamW's learning rate (weight decay 0.1, like the seed).
        eval_freq: Evaluate (validation loss and a sample of `start_context`) every this many steps.
        start_context: The prompt continued at each evaluation.
        config: A GPT2EduConfig, or a dict of overrides of the seed's GPT-2 124M config.
        output_dir: Where to write the Hugging Face folder and the log; a temporary folder when None.

    Returns:
        (train_losses, val_losses, tokens_seen, model): the losses and tokens seen at each evaluation, and the
        trained GPT2EduForCausalLM.
    """
    if not isinstance(config, GPT2EduConfig):
        config = GPT2EduConfig(**(config or {}))
    split = int(0.9 * len(text_data))  # the seed's split: the first 90% of the characters train
    raw = datasets.DatasetDict(
        train=datasets.Dataset.from_dict({"text": [text_data[:split]]}),
        validation=datasets.Dataset.from_dict({"text": [text_data[split:]]}),
    )
    with tempfile.TemporaryDirectory() as scratch:
        args = parse_args(
            [
                "--num_train_epochs",
                str(num_epochs),
                "--per_device_train_batch_size",
                str(batch_size),
                "--per_device_eval_batch_size",
                str(batch_size),
                "--learning_rate",
                str(learning_rate),
                "--eval_steps",
                str(eval_freq),
                "--logging_steps",
                str(eval_freq),
                "--eval_iters",
                "5",
                "--sample_prompt",
                start_context,
                "--lr_scheduler_type",
                "constant",
                "--num_warmup_steps",
                "0",
                "--output_dir",
                output_dir or scratch,
            ]
        )
        log = run(args, raw=raw, documents=False, config=config)
        model = AutoModelForCausalLM.from_pretrained(args.output_dir)
    evaluated = [entry for entry in log if "val_loss" in entry]
    return (
        [e["train_loss"] for e in evaluated],
        [e["val_loss"] for e in evaluated],
        [e["tokens_seen"] for e in evaluated],
        model,
    )


if __name__ == "__main__":
    sys.exit(main())
