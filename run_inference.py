"""Prompt in, continuation out: the seed's inference program on top of transformers' generate().

    python run_inference.py --model gpt2edu-out --prompt "Every effort moves you" --max-new-tokens 20

--model is a folder written by this project (or any GPT-2 folder transformers can load) or a Hub model id.
"""

import argparse
import json
import logging
import math
import os
import pickle
import re
import sys

import torch
from safetensors import SafetensorError, safe_open
from transformers import (
    CONFIG_MAPPING,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    TextStreamer,
    set_seed,
)
from transformers.utils import logging as transformers_logging

import modeling_gpt2edu  # noqa: F401  (registers gpt2edu with the Auto classes)
from convert_checkpoint import few
from tokenization_gpt2edu import gpt2_tokenizer

logger = logging.getLogger(__name__)


PROG = "run_inference.py"
# Files that make a folder's own tokenizer: a folder with none of them gets GPT-2's tokenizer.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "tokenizer.model")
WEIGHT_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
)


def device_count(device_type: str) -> int:
    """How many devices of a type (cuda, mps, xpu...) this PyTorch build can use here; 0 for none."""
    if device_type == "mps":
        return int(torch.backends.mps.is_available())
    backend = getattr(torch, device_type, None)  # torch.cuda, torch.xpu, ...
    if backend is None or not hasattr(backend, "is_available") or not backend.is_available():
        return 0
    return backend.device_count() if hasattr(backend, "device_count") else 1


def get_device(requested: str | None = None) -> torch.device:
    """The seed's device choice: CUDA if present, then Apple's MPS, then the CPU; `requested` overrides.

    Raises:
        ValueError: If `requested` is not a device name, or names a device this machine does not have.
    """
    if not requested:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise ValueError(f"device {requested!r} is not a device name; use cpu, cuda, cuda:1 or mps") from None
    if device.type == "meta":
        raise ValueError("device 'meta' holds shapes but no values, so it cannot generate; use cpu, cuda or mps")
    if device.type != "cpu":
        count = device_count(device.type)
        if count == 0:
            built = device.type != "cuda" or torch.backends.cuda.is_built()
            why = f"no {device.type} device is visible here" if built else "this PyTorch is built without CUDA"
            raise ValueError(
                f"device {requested!r} is not available ({why}); use {get_device().type}, or leave the device out "
                "to get the best available"
            )
        if device.index is not None and device.index >= count:
            raise ValueError(
                f"device {requested!r} does not exist: there are {count} {device.type} devices, "
                f"{device.type}:0 to {device.type}:{count - 1}"
            )
    return device


def check_model_folder(folder: str) -> None:
    """Refuse a local folder that from_pretrained would fail on with a multi-line or misleading message.

    Raises:
        ValueError: If config.json is missing, is not JSON, or declares a model type transformers does not know, or if
            the folder holds no weights.
    """
    config_file = os.path.join(folder, "config.json")
    if not os.path.isfile(config_file):
        raise ValueError(f"{folder!r} holds no model (no config.json); pass a folder written by save_pretrained")
    try:
        with open(config_file, encoding="utf-8") as file:
            config = json.load(file)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        message = f"{config_file} is not valid JSON ({error}); the file is damaged: copy or save it again"
        raise ValueError(message) from None
    if not isinstance(config, dict):
        raise ValueError(f"{config_file} holds a JSON {type(config).__name__}, not an object of model settings")
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING:
        declared = f"declares model_type {model_type!r}" if model_type else "declares no model_type"
        # HF: transformers would suggest trust_remote_code=True, a flag of from_pretrained, not of ours.
        raise ValueError(
            f"{config_file} {declared}, which neither gpt2edu nor transformers knows; this program runs gpt2edu and "
            "GPT-2 folders (and other model types built into transformers), not models that need their own code"
        )
    if not any(os.path.isfile(os.path.join(folder, name)) for name in WEIGHT_FILES):
        raise ValueError(
            f"{folder!r} has a config.json but no weights (model.safetensors); the folder is incomplete: "
            "copy or save the model again"
        )


def damaged_weights_message(folder: str, error: Exception) -> str:
    """One line naming the weight file from_pretrained could not read, and why."""
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if isinstance(error, SafetensorError):
        files = sorted(name for name in os.listdir(folder) if name.endswith(".safetensors"))
        for name in files:  # find the damaged one: safe_open reads and checks just the header
            try:
                with safe_open(os.path.join(folder, name), framework="pt"):
                    pass
            except SafetensorError as file_error:
                return f"{os.path.join(folder, name)} is damaged or incomplete ({file_error}); copy or save it again"
        return f"a weight file in {folder} is damaged or incomplete ({reason}); copy or save the model again"
    pickle_file = os.path.join(folder, "pytorch_model.bin")
    unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
    if unsafe:  # torch.load(weights_only=True) met a class or function, not just tensors
        return (
            f"{pickle_file} is a pickle that holds more than weights (it would import {unsafe.group(1)}), and "
            "unpickling that can run any code; if you trust the file, load it with torch.load(weights_only=False) "
            "and save the model with save_pretrained, which writes model.safetensors"
        )
    first_sentence = reason.split(". ")[0][:160]
    return (
        f"{pickle_file} cannot be read as a PyTorch state dict ({first_sentence}); the file is damaged: copy it "
        "again, or convert a good copy to safetensors with python convert_checkpoint.py FOLDER NEWFOLDER"
    )


def load_checked_model(name_or_path: str, **from_pretrained_kwargs) -> PreTrainedModel:
    """`AutoModelForCausalLM.from_pretrained`, refusing what transformers only warns about.

    transformers loads a folder whose weights lack tensors the config needs (initialising them at random), or hold
    tensors it does not need, or NaN/inf values, and reports it in a log line at most. A model like that generates
    garbage, so here each is an error naming the first tensors concerned. Damaged weight files and a config.json
    whose sizes disagree with the weights are reported in one line too, naming the file or the tensor.

    Raises:
        ValueError: For a damaged weight file, missing, unexpected or mis-shaped tensors, or non-finite weights.
        OSError: As from_pretrained, for a folder or Hub id that cannot be read.
    """
    local = os.path.isdir(name_or_path)
    if local:
        check_model_folder(name_or_path)
    # Mis-shaped tensors then come back in the loading info, which names them, instead of as an error that
    # suggests ignore_mismatched_sizes (a from_pretrained argument that would load them at random).
    from_pretrained_kwargs.setdefault("ignore_mismatched_sizes", True)
    previous = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()  # the load report becomes our error below, not a warning above it
    try:
        model, info = AutoModelForCausalLM.from_pretrained(
            name_or_path, output_loading_info=True, **from_pretrained_kwargs
        )
    except (SafetensorError, pickle.UnpicklingError, EOFError, RuntimeError) as error:
        pickled = local and not any(name.endswith(".safetensors") for name in os.listdir(name_or_path))
        if local and (isinstance(error, SafetensorError) or pickled):
            raise ValueError(damaged_weights_message(name_or_path, error)) from error
        raise
    finally:
        transformers_logging.set_verbosity(previous)
    problems = []
    if info.get("missing_keys"):
        problems.append(f"missing: {few(sorted(info['missing_keys']))}")
    if info.get("unexpected_keys"):
        problems.append(f"not in the model: {few(sorted(info['unexpected_keys']))}")
    if problems:
        raise ValueError(
            f"{name_or_path}: its weights do not match its config.json ({'; '.join(problems)}); the folder is "
            "incomplete or its files come from different models"
        )
    mismatched = sorted(info.get("mismatched_keys") or ())
    if mismatched:
        key, in_file, by_config = mismatched[0]
        more = f" (+{len(mismatched) - 1} more)" if len(mismatched) > 1 else ""
        raise ValueError(
            f"{name_or_path}: config.json does not fit its weights: {key} is "
            f"{'x'.join(map(str, in_file))} in the weights but {'x'.join(map(str, by_config))} by config.json{more}; "
            "config.json was edited or comes from another model: restore the one saved with these weights"
        )
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            bad = int((~torch.isfinite(tensor)).sum())
            raise ValueError(
                f"{name_or_path}: weight {name} holds NaN or infinite values ({bad} of {tensor.numel()}); the file is "
                "damaged or the training that wrote it diverged"
            )
    return model


def load_tokenizer(name_or_path: str):
    """The tokenizer of a folder or Hub id; GPT-2's for a folder with no tokenizer files (as gpt2edu models use it).

    Raises:
        ValueError: If a local folder's tokenizer files cannot be loaded.
    """
    local = os.path.isdir(name_or_path)
    if local and not any(os.path.isfile(os.path.join(name_or_path, name)) for name in TOKENIZER_FILES):
        logger.info("No tokenizer in %s; using GPT-2's tokenizer.", name_or_path)
        return gpt2_tokenizer()
    try:
        return AutoTokenizer.from_pretrained(name_or_path)
    except Exception as error:  # OSError, ValueError, or the tokenizers library's own Exception for a bad file
        if not local:  # a Hub model without a tokenizer
            logger.info("No tokenizer for %s; using GPT-2's tokenizer.", name_or_path)
            return gpt2_tokenizer()
        reason = " ".join(str(error).split())[:200]
        if not isinstance(error, (OSError, ValueError)) or not reason:  # e.g. KeyError: 'added_tokens'
            reason = f"{type(error).__name__}: {reason}"
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json"):
            path = os.path.join(name_or_path, name)
            try:
                with open(path, encoding="utf-8") as file:
                    json.load(file)
            except (UnicodeDecodeError, json.JSONDecodeError) as json_error:
                reason = f"{path} is not valid JSON: {json_error}"
                break
            except OSError:  # absent
                continue
        raise ValueError(
            f"{name_or_path}: its tokenizer cannot be loaded ({reason}); the tokenizer files are incomplete or "
            "damaged: copy them again, or delete them all to use GPT-2's tokenizer"
        ) from error


def load_model_and_tokenizer(name_or_path: str, device: torch.device | str = "cpu"):
    """Load a causal LM and its tokenizer from a folder or a Hub id.

    A folder without tokenizer files gets GPT-2's tokenizer (built from tiktoken), which every gpt2edu model uses.

    Raises:
        ValueError: If a local path does not exist, holds no model or a damaged one (see `load_checked_model`), or
            has tokenizer files that cannot be loaded.
    """
    if os.path.exists(name_or_path) and not os.path.isdir(name_or_path):
        raise ValueError(f"{name_or_path!r} is a file; pass the folder save_pretrained wrote the model into")
    try:
        model = load_checked_model(name_or_path)
    except OSError as error:  # HF: raised both for a missing local folder and for a Hub id that cannot be fetched
        where = "no such folder, and not found on the Hugging Face Hub" if not os.path.exists(name_or_path) else ""
        raise ValueError(f"cannot load model {name_or_path!r}: {where or str(error).splitlines()[0]}") from error
    tokenizer = load_tokenizer(name_or_path)
    return model.to(device).eval(), tokenizer


def check_prompt(prompt: str) -> None:
    """Raise ValueError for an empty prompt, or one with bytes that are not UTF-8 (surrogate escapes from argv)."""
    if not prompt:
        raise ValueError("the prompt is empty; pass some text to continue")
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as error:
        char = prompt[error.start]
        byte = f"byte 0x{ord(char) - 0xDC00:02x}" if 0xDC80 <= ord(char) <= 0xDCFF else f"character {char!r}"
        raise ValueError(
            f"the prompt is not UTF-8 text ({byte} at position {error.start}); pass UTF-8 text "
            "(set the terminal, or the file the prompt comes from, to UTF-8)"
        ) from None


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
    check_prompt(prompt)
    if isinstance(model, str):
        model, tokenizer = load_model_and_tokenizer(model, get_device())
    tokenizer = tokenizer or gpt2_tokenizer()
    context_length = model.config.max_position_embeddings
    if not 0 < max_new_tokens < context_length:
        raise ValueError(f"max_new_tokens must be between 1 and {context_length - 1}, got {max_new_tokens}")

    input_ids = tokenizer(prompt, return_tensors="pt").input_ids
    n_embeddings = model.get_input_embeddings().num_embeddings
    if input_ids.numel() and int(input_ids.max()) >= n_embeddings:
        raise ValueError(
            f"the prompt has token id {int(input_ids.max())}, but the model knows only {n_embeddings} tokens; "
            "its tokenizer belongs to another model: save the model's own tokenizer with it"
        )
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


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse, reporting an error in one line (argparse prints the whole usage above it)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = OneLineErrorParser(prog=PROG, description="Continue a prompt with a gpt2edu (or any GPT-2) model.")
    parser.add_argument("--model", required=True, help="model folder or Hub id")
    parser.add_argument("--prompt", required=True, help="text to continue (UTF-8)")
    parser.add_argument("--max-new-tokens", type=int, default=20, help="tokens to generate (default 20)")
    parser.add_argument("--do-sample", action="store_true", help="sample instead of greedy decoding")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (with --do-sample)")
    parser.add_argument("--top-k", type=int, default=None, help="sample among the k likeliest tokens")
    parser.add_argument("--top-p", type=float, default=None, help="sample from the smallest set of mass p")
    parser.add_argument("--seed", type=int, default=None, help="random seed (0 to 2**32-1), for reproducible sampling")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps... (default: the best available)")
    args = parser.parse_args(argv)
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


def report(error: Exception | str, code: int = 2) -> int:
    """Print an error as one line on stderr, as argparse words it, and return the exit code."""
    message = " ".join(str(error).split()) or type(error).__name__
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return code


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
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    transformers_logging.disable_progress_bar()  # the weights of a GPT-2 load in a blink; keep the terminal clean
    if sys.stdout is None:  # started with stdout closed (>&-): the text would go nowhere
        return report("stdout is closed; run with stdout open (a terminal, a file or a pipe)")
    if args.seed is not None:
        set_seed(args.seed)
    sampling = dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p) if args.do_sample else {}
    try:
        model, tokenizer = load_model_and_tokenizer(args.model, get_device(args.device))
    except (ValueError, OSError, RuntimeError) as error:
        return report(error)
    try:
        generate_response_from_prompt(
            args.prompt, model, args.max_new_tokens, tokenizer, stream=True, do_sample=args.do_sample, **sampling
        )
        sys.stdout.flush()  # a failed write shows here, not at exit
    except BrokenPipeError:  # the reader went away, as `| head` does
        detach_stdout()
        return report("stdout was closed before the whole text was written (as by | head)", code=1)
    except OSError as error:  # writing the text failed: a full disk, a closed terminal...
        detach_stdout()
        return report(f"cannot write the text to stdout ({error.strerror or error}); check where stdout goes")
    except (ValueError, RuntimeError) as error:
        return report(error)
    return 0


if __name__ == "__main__":
    sys.exit(main())
