"""Prompt in, continuation out: the seed's inference program on top of transformers' generate().

    python run_inference.py --model gpt2edu-out --prompt "Every effort moves you" --max-new-tokens 20

--model is a folder written by this project (or any GPT-2 folder transformers can load) or a Hub model id.
"""

import argparse
import logging
import os
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, TextStreamer, set_seed
from transformers.utils import logging as transformers_logging

import modeling_gpt2edu  # noqa: F401  (registers gpt2edu with the Auto classes)
from tokenization_gpt2edu import gpt2_tokenizer

logger = logging.getLogger(__name__)


def get_device(requested: str | None = None) -> torch.device:
    """The seed's device choice: CUDA if present, then Apple's MPS, then the CPU; `requested` overrides."""
    if requested:
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def load_checked_model(name_or_path: str, **from_pretrained_kwargs) -> PreTrainedModel:
    """`AutoModelForCausalLM.from_pretrained`, refusing what transformers only warns about.

    transformers loads a folder whose weights lack tensors the config needs (initialising them at random), or hold
    tensors it does not need, or NaN/inf values, and reports it in a log line at most. A model like that generates
    garbage, so here each is an error naming the first tensors concerned.

    Raises:
        ValueError: For missing, unexpected or mis-shaped tensors, or non-finite weights.
        OSError: As from_pretrained, for a folder or Hub id that cannot be read.
    """
    previous = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()  # the load report becomes our error below, not a warning above it
    try:
        model, info = AutoModelForCausalLM.from_pretrained(
            name_or_path, output_loading_info=True, **from_pretrained_kwargs
        )
    finally:
        transformers_logging.set_verbosity(previous)
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        keys = sorted(str(key) for key in info.get(kind) or ())
        if keys:
            shown = ", ".join(keys[:3]) + (f" (+{len(keys) - 3} more)" if len(keys) > 3 else "")
            raise ValueError(
                f"{name_or_path}: its weights do not match its config.json ({kind.replace('_', ' ')}: {shown}); "
                "the folder is incomplete or its files come from different models"
            )
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ValueError(
                f"{name_or_path}: weight {name} holds NaN or infinite values; the file is damaged or the training "
                "that wrote it diverged"
            )
    return model


def load_model_and_tokenizer(name_or_path: str, device: torch.device | str = "cpu"):
    """Load a causal LM and its tokenizer from a folder or a Hub id.

    A folder without tokenizer files gets GPT-2's tokenizer (built from tiktoken), which every gpt2edu model uses.

    Raises:
        ValueError: If a local path does not exist or holds no model.
    """
    if os.path.exists(name_or_path) and not os.path.isfile(os.path.join(name_or_path, "config.json")):
        raise ValueError(f"{name_or_path!r} holds no model (no config.json); pass a folder written by save_pretrained")
    try:
        model = load_checked_model(name_or_path)
    except OSError as error:  # HF: raised both for a missing local folder and for a Hub id that cannot be fetched
        where = "no such folder, and not found on the Hugging Face Hub" if not os.path.exists(name_or_path) else ""
        raise ValueError(f"cannot load model {name_or_path!r}: {where or str(error).splitlines()[0]}") from error
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError):
        logger.info("No tokenizer in %s; using GPT-2's tokenizer.", name_or_path)
        tokenizer = gpt2_tokenizer()
    return model.to(device).eval(), tokenizer


def generate_response_from_prompt(
    prompt: str,
    model: PreTrainedModel | str,
    max_new_tokens: int = 20,
    tokenizer=None,
    stream: bool = False,
    **generate_kwargs,
) -> str:
    """Continue `prompt` with the model and return the continuation (greedy unless sampling is asked for).

    Args:
        prompt: Text to continue; must not be empty.
        model: A loaded causal LM, or a folder / Hub id to load one from.
        max_new_tokens: How many tokens to add, at least 1 and less than the model's context.
        tokenizer: The model's tokenizer; GPT-2's when None.
        stream: Print the prompt, then the continuation token by token as it is generated, to stdout.
        **generate_kwargs: Passed to `model.generate`, e.g. `do_sample=True, temperature=0.8, top_k=50`.

    Returns:
        The generated text, without the prompt.

    Raises:
        ValueError: For an empty prompt, a bad token count or a model that cannot be loaded.
    """
    if not prompt:
        raise ValueError("the prompt is empty; pass some text to continue")
    if isinstance(model, str):
        model, tokenizer = load_model_and_tokenizer(model, get_device())
    tokenizer = tokenizer or gpt2_tokenizer()
    context_length = model.config.max_position_embeddings
    if not 0 < max_new_tokens < context_length:
        raise ValueError(f"max_new_tokens must be between 1 and {context_length - 1}, got {max_new_tokens}")

    input_ids = tokenizer(prompt, return_tensors="pt").input_ids
    room = context_length - max_new_tokens
    if input_ids.shape[1] > room:
        # The seed crops its input to the context; with a KV cache the whole output must fit, so crop the prompt.
        logger.warning(
            "The prompt has %d tokens; keeping its last %d so that %d new tokens fit in the %d-token context.",
            input_ids.shape[1],
            room,
            max_new_tokens,
            context_length,
        )
        input_ids = input_ids[:, -room:]
    input_ids = input_ids.to(model.device)
    streamer = TextStreamer(tokenizer) if stream else None
    pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with torch.no_grad():
        output = model.generate(
            input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=max_new_tokens,
            streamer=streamer,
            pad_token_id=pad_token_id,
            **generate_kwargs,
        )
    return tokenizer.decode(output[0, input_ids.shape[1] :], skip_special_tokens=False)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Continue a prompt with a gpt2edu (or any GPT-2) model.")
    parser.add_argument("--model", required=True, help="model folder or Hub id")
    parser.add_argument("--prompt", required=True, help="text to continue")
    parser.add_argument("--max-new-tokens", type=int, default=20, help="tokens to generate (default 20)")
    parser.add_argument("--do-sample", action="store_true", help="sample instead of greedy decoding")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (with --do-sample)")
    parser.add_argument("--top-k", type=int, default=None, help="sample among the k likeliest tokens")
    parser.add_argument("--top-p", type=float, default=None, help="sample from the smallest set of mass p")
    parser.add_argument("--seed", type=int, default=None, help="random seed, for reproducible sampling")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps... (default: the best available)")
    args = parser.parse_args(argv)
    if not args.prompt.strip():
        parser.error("--prompt is empty; pass some text to continue")
    if args.max_new_tokens < 1:
        parser.error(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    if args.temperature <= 0:
        parser.error(f"--temperature must be positive, got {args.temperature}")
    if args.top_k is not None and args.top_k < 1:
        parser.error(f"--top-k must be at least 1, got {args.top_k}")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        parser.error(f"--top-p must be in (0, 1], got {args.top_p}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    transformers_logging.disable_progress_bar()  # the weights of a GPT-2 load in a blink; keep the terminal clean
    if args.seed is not None:
        set_seed(args.seed)
    sampling = dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p) if args.do_sample else {}
    try:
        device = get_device(args.device)
        model, tokenizer = load_model_and_tokenizer(args.model, device)
        generate_response_from_prompt(
            args.prompt, model, args.max_new_tokens, tokenizer, stream=True, do_sample=args.do_sample, **sampling
        )
    except (ValueError, RuntimeError) as error:
        print(f"{os.path.basename(sys.argv[0])}: error: {error}", file=sys.stderr)  # as argparse words it
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
