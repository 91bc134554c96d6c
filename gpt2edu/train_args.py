"""train_accelerate.py's command line: the flags, their defaults, and the checks of their values.

The flags follow transformers' examples/pytorch/language-modeling/run_clm_no_trainer.py wherever one exists. Every
value is checked where it enters: right after parsing, or (what depends on the model) right after the model is built,
before any data is read, and a bad one is reported in one line naming the value and the fix.
"""

import argparse
import dataclasses
import math
import os
from pathlib import Path

from accelerate.tracking import get_available_trackers
from accelerate.utils import LoggerType
from safetensors import SafetensorError
from transformers import PreTrainedModel

from configuration_gpt2edu import GPT2EduConfig

from .cli import OneLineErrorParser, UsageError, first_line
from .loading import load_checked_model, looks_like_hub_id

# A model small enough to learn the default corpus in about a minute on a laptop CPU.
SMALL_MODEL = "emb_dim=128,n_heads=4,n_layers=4,context_length=128"
SCHEDULERS = ["linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup"]
CORPUS_SUFFIXES = (".txt", ".json", ".jsonl", ".parquet")


def parse_args(argv: list[str] | None, default_corpus: Path) -> argparse.Namespace:
    """The flags, checked; `default_corpus` is what trains when neither --train_file nor --dataset_name is given."""
    parser = OneLineErrorParser(description="Train a gpt2edu model with datasets and Accelerate.")
    add_data_flags(parser.add_argument_group("data"))
    add_model_flags(parser.add_argument_group("model"))
    add_optimisation_flags(parser.add_argument_group("optimisation"))
    add_run_flags(parser.add_argument_group("evaluation, checkpoints and output"))
    args = parser.parse_args(argv)
    fill_data_dependent_defaults(args)
    try:
        validate_args(args, default_corpus)
    except UsageError as error:
        parser.error(str(error))
    return args


def add_data_flags(group) -> None:
    group.add_argument("--dataset_name", default=None, help="a dataset on the Hub, read with datasets.load_dataset")
    group.add_argument("--dataset_config_name", default=None, help="the dataset's configuration name")
    group.add_argument("--train_file", default=None, help=".txt, .json, .jsonl or .parquet (default: shipped corpus)")
    group.add_argument("--validation_file", default=None, help="same formats; default: split off the training data")
    group.add_argument("--validation_split_percentage", type=int, default=5, help="%% of train held out (default 5)")
    group.add_argument("--text_column_name", default=None, help="column holding the text (default: 'text')")
    group.add_argument("--block_size", type=int, default=None, help="tokens per training example (default: context)")
    group.add_argument("--streaming", action="store_true", help="stream the corpus instead of materialising it")


def add_model_flags(group) -> None:
    group.add_argument(
        "--model_name_or_path", default=None, help="start from this model (folder, Hub id or seed .pth file)"
    )
    group.add_argument(
        "--config_overrides",
        default=None,
        help=f"config of a new model, e.g. 'emb_dim=64,n_layers=2' (default: '{SMALL_MODEL}'; '' for GPT-2 124M)",
    )


def add_optimisation_flags(group) -> None:
    group.add_argument("--per_device_train_batch_size", type=int, default=8)
    group.add_argument("--per_device_eval_batch_size", type=int, default=8)
    group.add_argument("--learning_rate", type=float, default=None, help="default 1e-3, or 2e-3 on the shipped corpus")
    group.add_argument("--weight_decay", type=float, default=0.1)
    group.add_argument("--num_train_epochs", type=int, default=None, help="default 1, or 40 on the shipped corpus")
    group.add_argument("--max_train_steps", type=int, default=None, help="overrides --num_train_epochs")
    group.add_argument("--gradient_accumulation_steps", type=int, default=1)
    group.add_argument("--lr_scheduler_type", default="cosine", choices=SCHEDULERS)
    group.add_argument("--num_warmup_steps", type=int, default=None, help="default: 5%% of the steps")
    group.add_argument("--max_grad_norm", type=float, default=1.0, help="gradient clipping; 0 turns it off")
    group.add_argument("--mixed_precision", default=None, choices=["no", "fp16", "bf16"], help="for Accelerate")
    group.add_argument("--compile", action="store_true", help="torch.compile the model")
    group.add_argument("--seed", type=int, default=123)


def add_run_flags(group) -> None:
    group.add_argument(
        "--eval_steps",
        type=int,
        default=None,
        help="evaluate every N steps (and at the end); default 50, or 40 on the shipped corpus",
    )
    group.add_argument("--eval_iters", type=int, default=20, help="batches per evaluation")
    group.add_argument("--logging_steps", type=int, default=10, help="log the training loss every N steps")
    group.add_argument("--sample_prompt", default="Every effort moves you", help="continued at each evaluation")
    group.add_argument("--checkpointing_steps", type=int, default=None, help="save a resumable state every N steps")
    group.add_argument("--resume_from_checkpoint", default=None, help="a step_N folder, or 'latest'")
    group.add_argument("--output_dir", default="gpt2edu-out")
    group.add_argument(
        "--overwrite_output_dir",
        action="store_true",
        help="train into an --output_dir that holds an earlier run, replacing its model and checkpoints",
    )
    group.add_argument("--push_to_hub", action="store_true", help="upload the final model to the Hub")
    group.add_argument("--hub_model_id", default=None, help="repository for --push_to_hub (default: output_dir name)")
    group.add_argument("--with_tracking", action="store_true", help="log metrics through Accelerate's trackers")
    group.add_argument("--report_to", default="all", help="tracker(s) for --with_tracking: tensorboard, wandb, ...")


def fill_data_dependent_defaults(args: argparse.Namespace) -> None:
    """Defaults that depend on the data: the shipped corpus is small (8,448 training tokens), so the demo run goes over
    it 40 times at a higher learning rate, evaluating more often, to show the model learning it within about three
    minutes on a 2-core CPU (training loss from 10.8 to about 1.3)."""
    shipped = not (args.train_file or args.dataset_name)
    if args.learning_rate is None:
        args.learning_rate = 2e-3 if shipped else 1e-3
    if args.eval_steps is None:
        args.eval_steps = 40 if shipped else 50
    if args.num_train_epochs is None:
        args.num_train_epochs = 40 if shipped else 1


def validate_args(args: argparse.Namespace, default_corpus: Path) -> None:
    """Refuse bad values before anything is read or written."""
    validate_numbers(args)
    validate_data_flags(args, default_corpus)
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
    if args.model_name_or_path and args.config_overrides:
        raise UsageError("--config_overrides builds a new model; it cannot be combined with --model_name_or_path")
    if args.push_to_hub and not (args.hub_model_id or args.output_dir):
        raise UsageError("--push_to_hub needs --hub_model_id")


def validate_numbers(args: argparse.Namespace) -> None:
    """Counts must be positive, rates finite, the seed within numpy's range."""
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
    if args.weight_decay < 0 or args.max_grad_norm < 0 or (args.num_warmup_steps or 0) < 0:
        raise UsageError("--weight_decay, --max_grad_norm and --num_warmup_steps must not be negative")
    if not 0 < args.validation_split_percentage < 100:
        raise UsageError(f"--validation_split_percentage must be in 1..99, got {args.validation_split_percentage}")


def validate_data_flags(args: argparse.Namespace, default_corpus: Path) -> None:
    """The corpus files exist, are not empty and have a format datasets reads; one source of data at most."""
    for name in ("train_file", "validation_file"):
        path = getattr(args, name)
        if path is not None and not os.path.isfile(path):
            raise UsageError(f"--{name} {path!r} does not exist")
        if path is not None and os.path.getsize(path) == 0:
            raise UsageError(f"--{name} {path!r} is empty")
        if path is not None and Path(path).suffix not in CORPUS_SUFFIXES:
            raise UsageError(f"--{name} must be a .txt, .json, .jsonl or .parquet file, got {path!r}")
    if args.dataset_name and args.train_file:
        raise UsageError("pass either --dataset_name or --train_file, not both")
    if not (args.dataset_name or args.train_file or default_corpus.is_file()):
        raise UsageError(
            f"no --train_file or --dataset_name, and the default corpus {default_corpus} is not there (it comes with "
            "a clone of the repository, not with an installed wheel); pass --train_file or --dataset_name"
        )


# --- the model the flags describe ---------------------------------------------------------------------------------

# The settings --config_overrides may set: GPT2EduConfig's own fields, but pad_token_id, whose default (None) has no
# type for a value to be read as.
CONFIG_KEYS = [
    f.name
    for f in dataclasses.fields(GPT2EduConfig)
    if f.name in GPT2EduConfig.__annotations__ and f.default is not None
]
KNOWN_KEYS = "vocab_size, context_length, emb_dim, n_heads, n_layers, drop_rate, qkv_bias, tie_word_embeddings"


def new_model_config(overrides: str) -> GPT2EduConfig:
    """GPT-2 124M's config with --config_overrides applied ('emb_dim=64,n_layers=2,qkv_bias=true'), checked.

    Each value is read by transformers' `update_from_string`, as run_clm reads its --config_overrides: as the type of
    the setting's default. It would set any attribute of a config, so the keys are checked first; and it sets them
    after the config is built, so the config is built again from the values for its own checks to run.
    """
    config, given = GPT2EduConfig(), {}
    for item in filter(None, (part.strip() for part in overrides.split(","))):
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or key not in CONFIG_KEYS:
            raise UsageError(
                f"--config_overrides: unknown or malformed {item!r}; use key=value with keys among {KNOWN_KEYS}"
            )
        try:
            config.update_from_string(f"{key}={raw.strip()}")
        except ValueError:
            kind = type(getattr(config, key)).__name__
            raise UsageError(f"--config_overrides: {key}={raw!r} is not a valid {kind}") from None
        given[key] = getattr(config, key)
    try:
        return GPT2EduConfig(**given)
    except ValueError as error:
        raise UsageError(f"--config_overrides: {error}") from error


def load_start_model(name_or_path: str) -> PreTrainedModel:
    """The model --model_name_or_path names (a folder, a Hub id or a seed .pth file), its weights checked
    (gpt2edu/loading.py; a .pth file is converted in memory, as convert_checkpoint.py reads it)."""
    name = os.path.expanduser(name_or_path)
    # Anything not shaped like a Hub id ("name" or "owner/name") that is not a folder or a file is a path that does
    # not exist (the Hub client would answer "Repo id must be in the form ...").
    if not looks_like_hub_id(name) and not os.path.exists(name):
        raise UsageError(f"--model_name_or_path {name_or_path!r}: no such folder or .pth file")
    try:
        return load_checked_model(name)
    except (OSError, ValueError, SafetensorError) as error:
        where = "" if os.path.exists(name) else " (no such folder, nor a model of that name on the Hub)"
        raise UsageError(f"cannot load --model_name_or_path {name!r}{where}: {first_line(error, 300)}") from None


def check_model_fits(args: argparse.Namespace, model: PreTrainedModel, tokenizer) -> None:
    """Check the flags against the model: --block_size (default: the context, at most 1024), the tokenizer's
    vocabulary, --sample_prompt's length."""
    context = model.config.max_position_embeddings
    args.block_size = args.block_size or min(context, 1024)
    if args.block_size > context:
        raise UsageError(f"--block_size {args.block_size} is larger than the model's context ({context} tokens)")
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
