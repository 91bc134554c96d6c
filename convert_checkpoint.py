"""Convert between the seed's .pth checkpoints, transformers' own GPT-2 folders and gpt2edu folders; write GGUF.

    python convert_checkpoint.py gpt2_model.pth gpt2edu-124m                # seed checkpoint -> gpt2edu folder
    python convert_checkpoint.py gpt2edu-124m gpt2-124m --to gpt2           # gpt2edu folder -> plain GPT-2 folder
    python convert_checkpoint.py gpt2-folder gpt2edu-openai                 # transformers GPT-2 -> gpt2edu
    python convert_checkpoint.py openai-community/gpt2 gpt2edu-openai       # a Hub model id -> gpt2edu
    python convert_checkpoint.py gpt2edu-124m back.pth                      # gpt2edu folder -> seed checkpoint
    python convert_checkpoint.py gpt2_model.pth model.gguf --dtype float16  # any source -> GGUF, for llama.cpp
    python convert_checkpoint.py gpt2_model.pth out --push-to-hub you/gpt2edu-124m
    python convert_checkpoint.py review_classifier.pth spam-classifier --labels ham,spam  # the book's chapter 6
    python convert_checkpoint.py gpt2-medium355M-sft.pth gpt2edu-sft --n-heads 16 --chat-template alpaca  # chapter 7

Every conversion goes through gpt2edu's layout: source -> gpt2edu -> target. What it rests on comes first, imported
by name from gpt2edu/convert_maps.py, the file to read first: the name tables (one table per part of the model:
seed name -> gpt2edu name -> GPT-2 name, read backwards on the way back) and the pure maps from state dict to state
dict and config to config. They live in the library because more than this program reads checkpoints: every program
takes a seed .pth file as a model (gpt2edu/loading.py), and the seed's API saves and loads that form. Then this file:
`convert()`, which reads (`read_source`), builds (`build_model`) and writes, and the command line.
What keeps it safe sits beside it: gpt2edu/convert_sources.py reads untrusted checkpoints (weights-only unpickling)
and checks them; gpt2edu/convert_outputs.py builds the model, writes it into a staging folder, loads the result back
as a user will, compares every parameter with the source, and only then moves it into place. gpt2edu/gguf_export.py
writes a GGUF file (llama.cpp's gpt2 architecture) from gpt2edu's layout, with its own name table.
"""

import argparse
import sys
from pathlib import Path

import torch
from transformers import PreTrainedModel

from configuration_gpt2edu import CLASSIFIER_POOLINGS
from gpt2edu import convert_outputs as outputs
from gpt2edu import convert_sources as sources
from gpt2edu import gguf_export
from gpt2edu.cli import EXIT_INTERRUPTED, EXIT_OK, OneLineErrorParser, UsageError, quiet_logs, report

# --- the name tables and the pure maps (gpt2edu/convert_maps.py), by name -----------------------------------------
from gpt2edu.convert_maps import (  # noqa: F401  (imported by name to be met here; users and tests import them too)
    BLOCK_NAMES,  # each block's weights: seed and gpt2edu name -> GPT-2's (query, key and value fused in c_attn)
    CLASSIFIER_HEAD_NAMES,  # the book's chapter-6 head, out_head -> the sequence classifier's score
    SEED_CONFIG_FIELDS,  # the seed's config, the dict the book passes to GPTModel(cfg)
    TOP_NAMES,  # embeddings, final norm and output head: seed name -> (gpt2edu name, GPT-2 name)
    gpt2_config_to_gpt2edu,
    gpt2_rename_table,
    gpt2_to_gpt2edu_state_dict,
    gpt2edu_config_to_gpt2,
    gpt2edu_to_gpt2_state_dict,
    gpt2edu_to_seed_state_dict,
    is_sequence_classifier,
    normalize_gpt2_keys,
    seed_config_to_gpt2edu,
    seed_rename_table,
    seed_to_gpt2edu_state_dict,
    strip_wrapper_prefixes,
    with_labels,
)
from gpt2edu.convert_outputs import build_model
from gpt2edu.convert_sources import Source, read_seed_checkpoint, read_source  # noqa: F401  (Source: for users)
from gpt2edu.files import atomic_write
from tokenization_gpt2edu import CHAT_TEMPLATES

PROG = "convert_checkpoint.py"


# --- writing the seed's form ---------------------------------------------------------------------------------------


def save_seed_checkpoint(model: PreTrainedModel, out_file: Path, force: bool = False) -> int:
    """Write the seed's checkpoint form of `model`, verified, atomically: OUT.pth and OUT.config.json beside it.

    OUT.pth is a bare state dict with the seed's names, `att.mask` buffers included, so the book's
    `GPTModel(cfg).load_state_dict(torch.load("OUT.pth"), strict=True)` loads it; OUT.config.json holds the seed's
    config fields, the `cfg` dict to build that `GPTModel` with (and what this converter reads back). A sequence
    classifier's form is the book's chapter-6 model: its head is `out_head` again (its labels are not kept).

    Returns:
        The number of tensors in OUT.pth, each verified to equal what was meant to be written.
    """
    outputs.check_output_file(out_file, force)
    state_dict = gpt2edu_to_seed_state_dict(dict(model.state_dict()), model.config)
    fields = {name: getattr(model.config, name) for name in SEED_CONFIG_FIELDS}
    with atomic_write(out_file, file=True, full_disk_message=outputs.full_disk_message(out_file)) as staging:
        count = outputs.write_seed_file(staging / out_file.name, state_dict, fields, where=str(out_file))
        # What the tensors compute: read back as a seed checkpoint, they are the model's parameters.
        source = read_seed_checkpoint(staging / out_file.name)
        outputs.compare_parameters(source.state_dict, dict(model.state_dict()), str(out_file))
    return count


# --- command line --------------------------------------------------------------------------------------------------

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# The layouts written as one file: what to call it, and the ends of OUT's name that choose it.
FILE_LAYOUTS = {"seed": ("a seed checkpoint", (".pth", ".pt")), "gguf": ("a GGUF file", (".gguf",))}


def convert(args: argparse.Namespace) -> int:
    """Read, build, write, verify and (optionally) push; return the number of verified tensors."""
    args.to = choose_layout(args)
    out, dtype = Path(args.out_dir), DTYPES.get(args.dtype)
    checks = {"seed": outputs.check_output_file, "gguf": gguf_export.check_output_file}
    checks.get(args.to, outputs.check_output_folder)(out, args.force)  # fail before the slow part
    if (args.labels is not None or args.pooling is not None) and args.to in FILE_LAYOUTS:
        what = FILE_LAYOUTS[args.to][0]
        raise ValueError(f"--labels and --pooling go into a folder's config.json; {what} has no place for them")
    if args.chat_template is not None and args.to in FILE_LAYOUTS:
        what = FILE_LAYOUTS[args.to][0]
        raise ValueError(f"--chat-template is written beside a model folder's tokenizer; {what} has no tokenizer")
    source = read_source(args.src, args.n_heads, args.revision)
    sources.check_source_tensors(source)
    print(f"Read {source.description}")
    if args.labels is not None or args.pooling is not None:
        source.config = with_labels(source.config, args.labels, args.pooling)
    if is_sequence_classifier(source.config):
        check_classifier_layout(source, args.to)
        print(describe_classifier(source.config, labels_given=args.labels is not None))
    chat_template = outputs.chat_template_for(source, args.src, args.chat_template)  # or a local SRC folder's own
    # GGUF casts as it writes (its vectors stay float32); the seed's form and GGUF are written from gpt2edu's layout.
    model = build_model(source, "gpt2" if args.to == "gpt2" else "gpt2edu", None if args.to == "gguf" else dtype)
    print(f"Model: {outputs.describe_model(source.config, sum(p.numel() for p in model.parameters()), model.dtype)}")
    if args.to == "gguf":
        verified = gguf_export.save_gguf(dict(model.state_dict()), model.config, out, dtype, args.force)
        print(f"Wrote GGUF file {out}, for llama.cpp (llama-completion -m {out} -p TEXT), Ollama and LM Studio")
        print(f"verified: {verified} tensors in {out} read back equal to the model's, in the file's dtypes")
        return verified
    if args.to == "seed":
        verified = save_seed_checkpoint(model, out, args.force)
        print(f"Wrote seed checkpoint {out} and its config {sources.seed_config_file(out)}")
        print(f"verified: {verified} tensors in {out} read back equal to their source")
        return verified
    card = outputs.conversion_model_card(source, model, args.to, args.push_to_hub or out.name)
    tokenizer = outputs.classifier_tokenizer(source.config) if is_sequence_classifier(source.config) else None
    verified = outputs.save_model_folder(
        model, out, tokenizer, model_card=card, force=args.force, chat_template=chat_template
    )
    print(f"Wrote {args.to} folder {out}: {', '.join(sorted(p.name for p in out.iterdir()))}")
    print(f"verified: the model loaded from {out} has all {verified} tensors of its source, bit for bit")
    if args.push_to_hub:
        print(f"Pushed to {outputs.push_folder(out, args.push_to_hub, args.private)}")
    return verified


def check_classifier_layout(source: Source, to: str) -> None:
    """Refuse the layouts that cannot hold the book's classifier: GPT-2's language-model folder and GGUF."""
    if to in ("gpt2", "gguf"):
        what = "GPT2LMHeadModel folders" if to == "gpt2" else "llama.cpp's gpt2 architecture, a language model"
        raise ValueError(
            f"{source.description} is a sequence classifier (the book's chapter 6), which --to {to} cannot hold "
            f"({what}; GPT-2's own classifier head has no bias): write a gpt2edu folder or a seed .pth"
        )


def describe_classifier(config, labels_given: bool) -> str:
    """'Classifier: labels ham, spam; pooling last_position (the book's)' in one line, saying where labels default."""
    labels = [config.id2label[i] for i in range(config.num_labels)]
    default = not labels_given and labels == [f"LABEL_{i}" for i in range(config.num_labels)]
    named = " (transformers' default names: --labels ham,spam names them)" if default else ""
    whose = "the book's" if config.classifier_pooling == "last_position" else "GPT-2's"
    return f"Classifier: labels {', '.join(labels)}{named}; pooling {config.classifier_pooling} ({whose})"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_logs()
    try:
        convert(args)
    except KeyboardInterrupt:  # the staging folder has been removed on the way out (atomic_write)
        print(f"{PROG}: interrupted; nothing was written to {args.out_dir}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (UsageError, OSError, ValueError, RuntimeError) as error:  # a full disk is a UsageError (atomic_write)
        return report(error, PROG)
    return EXIT_OK


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = OneLineErrorParser(
        prog=PROG,
        description="Convert a seed .pth checkpoint or a gpt2edu / GPT-2 model folder into a gpt2edu or GPT-2 folder, "
        "a seed checkpoint or a GGUF file.",
    )
    parser.add_argument(
        "src",
        metavar="SRC",
        help="seed checkpoint (.pth/.pt), model folder (gpt2edu or transformers GPT-2), or Hub model id",
    )
    parser.add_argument(
        "out_dir",
        metavar="OUT",
        help="folder to write (must not exist or be empty, unless --force); a name ending in .pth/.pt writes a seed "
        "checkpoint, one ending in .gguf a GGUF file",
    )
    parser.add_argument(
        "--to",
        choices=("gpt2edu", "gpt2", "seed", "gguf"),
        default=None,
        help="layout to write (default: seed for an OUT ending in .pth/.pt, gguf for .gguf, else gpt2edu)",
    )
    parser.add_argument("--revision", default=None, help="branch, tag or commit, when SRC is a Hub model id")
    parser.add_argument("--n-heads", type=int, metavar="N", help="attention heads, for a seed file with no config")
    parser.add_argument(
        "--dtype", choices=tuple(DTYPES), default=None, help="store weights as (default: as read; GGUF: its matrices)"
    )
    parser.add_argument(
        "--labels",
        type=lambda text: [label.strip() for label in text.split(",")],
        metavar="A,B",
        help="a classifier's label names, in the order of its head's rows (the book's chapter 6: ham,spam)",
    )
    parser.add_argument(
        "--pooling",
        choices=CLASSIFIER_POOLINGS,
        default=None,
        help="the position a classifier reads: last_position (the book's, the default for its .pth) or "
        "last_non_padding (GPT-2's)",
    )
    parser.add_argument(
        "--chat-template",
        choices=CHAT_TEMPLATES,
        default=None,
        help="write this chat template beside the tokenizer, for an instruction model (alpaca: the book's chapter-7 "
        "prompt format; a folder SRC's own chat_template.jinja is kept without it)",
    )
    parser.add_argument("--force", action="store_true", help="replace a non-empty OUT_DIR")
    parser.add_argument("--push-to-hub", metavar="REPO_ID", default=None, help="then upload the folder to the Hub")
    parser.add_argument("--private", action="store_true", help="create the Hub repo as private (with --push-to-hub)")
    args = parser.parse_args(argv)
    if args.n_heads is not None and args.n_heads < 1:
        parser.error(f"--n-heads must be at least 1, got {args.n_heads}")
    if args.private and not args.push_to_hub:
        parser.error("--private only applies with --push-to-hub")
    src, out_dir = Path(args.src).resolve(), Path(args.out_dir).resolve()
    if args.force and (src == out_dir or out_dir in src.parents):
        parser.error(f"{args.src} lies inside {args.out_dir}; --force would delete it. Choose another OUT")
    return args


def choose_layout(args: argparse.Namespace) -> str:
    """The layout to write: --to, or OUT's name (.pth/.pt: the seed's, .gguf: GGUF); ValueError where they differ."""
    named = next((to for to, (_, ends) in FILE_LAYOUTS.items() if args.out_dir.endswith(ends)), None)
    if named and args.push_to_hub:
        what, ends = FILE_LAYOUTS[named]
        raise ValueError(f"--push-to-hub uploads model folders; {what} (--to {named}) is a single {ends[0]} file")
    if args.to is None:
        return named or "gpt2edu"
    if args.to in FILE_LAYOUTS and named != args.to:
        end = FILE_LAYOUTS[args.to][1][0]
        raise ValueError(
            f"--to {args.to} writes a {end} file, but OUT is {args.out_dir!r}: name it e.g. {args.out_dir}{end}"
        )
    if args.to not in FILE_LAYOUTS and named:
        what, ends = FILE_LAYOUTS[named]
        raise ValueError(
            f"OUT {args.out_dir!r} ends in {'/'.join(ends)}, which names {what}: use --to {named}, or name the "
            f"{args.to} folder without the extension"
        )
    return args.to


if __name__ == "__main__":
    sys.exit(main())
