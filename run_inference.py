"""Prompt in, continuation out: the seed's inference program on top of transformers' generate().

    python run_inference.py --model gpt2edu-out --prompt "Every effort moves you" --max-new-tokens 20
    python run_inference.py                    # the seed's run: gpt2_model.pth here, "Every effort moves you"

--model is a folder written by this project (or any GPT-2 folder transformers can load), a Hub model id, or one of
the book's .pth files (a bare state dict or a training checkpoint), converted in memory as convert_checkpoint.py
would convert it. Without --model it is the seed's file name, gpt2_model.pth in the working directory.

--max-new-tokens may go past the model's context: a gpt2edu model then reads the last context_length tokens for each
new one, as the seed's loop does (each such token is a forward pass over that whole window).

This file is the command line. The generation itself (`generate_response_from_prompt`, also the seed API's) is in
gpt2edu/generation.py; the device choice and the checked loading of a model folder, which the trainer and
inspect_model.py share, are in gpt2edu/loading.py; the one-line errors are gpt2edu/cli.py's.
"""

import argparse
import math
import os
import sys

from transformers import set_seed

from gpt2edu.cli import EXIT_OK, EXIT_PIPE_CLOSED, OneLineErrorParser, quiet_logs, report
from gpt2edu.generation import check_prompt, generate_response_from_prompt
from gpt2edu.loading import get_device, load_checked_model, load_model_and_tokenizer

# The library functions users and tests import from this program; they live in gpt2edu/generation.py and loading.py.
__all__ = ["generate_response_from_prompt", "get_device", "load_checked_model", "load_model_and_tokenizer", "main"]

PROG = "run_inference.py"
# What the seed's run_inference.py ran with no arguments: its checkpoint in the working directory, its prompt.
SEED_MODEL = "gpt2_model.pth"
SEED_PROMPT = "Every effort moves you"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = OneLineErrorParser(prog=PROG, description="Continue a prompt with a gpt2edu (or any GPT-2) model.")
    parser.add_argument(
        "--model", default=None, help=f"model folder, Hub id or seed .pth file (default: {SEED_MODEL}, as the seed)"
    )
    parser.add_argument("--prompt", default=SEED_PROMPT, help=f"text to continue (UTF-8; default {SEED_PROMPT!r})")
    parser.add_argument(
        "--max-new-tokens", type=int, default=20, help="tokens to generate (default 20); may go past the context"
    )
    parser.add_argument("--do-sample", action="store_true", help="sample instead of greedy decoding")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (with --do-sample)")
    parser.add_argument("--top-k", type=int, default=None, help="sample among the k likeliest tokens")
    parser.add_argument("--top-p", type=float, default=None, help="sample from the smallest set of mass p")
    parser.add_argument("--seed", type=int, default=None, help="random seed (0 to 2**32-1), for reproducible sampling")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps... (default: the best available)")
    args = parser.parse_args(argv)
    if args.model is None:
        if not os.path.exists(SEED_MODEL):
            parser.error(
                f"no --model given, and no {SEED_MODEL} (the seed's checkpoint) in {os.getcwd()}: pass --model "
                "FOLDER, HUB_ID or FILE.pth (after python train_accelerate.py: --model gpt2edu-out)"
            )
        args.model = SEED_MODEL
    if not args.prompt.strip():
        parser.error("--prompt is empty; pass some text to continue")
    try:
        check_prompt(args.prompt)
    except ValueError as error:
        parser.error("--prompt" + str(error).removeprefix("the prompt"))
    try:
        get_device(args.device)
    except ValueError as error:
        parser.error(f"--{error}")  # "device 'cuda' is not available..." -> "--device 'cuda' ..."
    if args.max_new_tokens < 1:
        parser.error(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    if not (math.isfinite(args.temperature) and args.temperature > 0):
        parser.error(f"--temperature must be a positive finite number, got {args.temperature}")
    if args.top_k is not None and args.top_k < 1:
        parser.error(f"--top-k must be at least 1, got {args.top_k}")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        parser.error(f"--top-p must be in (0, 1], got {args.top_p}")
    if args.seed is not None and not 0 <= args.seed < 2**32:  # numpy's range; set_seed seeds numpy too
        parser.error(f"--seed must be between 0 and {2**32 - 1}, got {args.seed}")
    return args


def detach_stdout() -> None:
    """Point stdout at devnull after a failed write, so that the interpreter's last flush does not fail again.

    Python's recipe for a closed pipe (the `signal` module's docs, "Note on SIGPIPE").
    """
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a file (e.g. captured by a test)
        pass


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_logs()  # the weights of a GPT-2 load in a blink: no progress bars, warnings only
    if sys.stdout is None:  # started with stdout closed (>&-): the text would go nowhere
        return report("stdout is closed; run with stdout open (a terminal, a file or a pipe)", PROG)
    if args.seed is not None:
        set_seed(args.seed)
    sampling = dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p) if args.do_sample else {}
    try:
        model, tokenizer = load_model_and_tokenizer(args.model, get_device(args.device))
    except (ValueError, OSError, RuntimeError) as error:
        return report(error, PROG)
    try:
        generate_response_from_prompt(
            args.prompt, model, args.max_new_tokens, tokenizer, stream=True, do_sample=args.do_sample, **sampling
        )
        sys.stdout.flush()  # a failed write shows here, not at exit
    except BrokenPipeError:  # the reader went away, as `| head` does
        detach_stdout()
        return report("stdout was closed before the whole text was written (as by | head)", PROG, EXIT_PIPE_CLOSED)
    except OSError as error:  # writing the text failed: a full disk, a closed terminal...
        detach_stdout()
        return report(f"cannot write the text to stdout ({error.strerror or error}); check where stdout goes", PROG)
    except (ValueError, RuntimeError) as error:
        return report(error, PROG)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
