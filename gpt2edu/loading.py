"""Loading a model the way every gpt2edu program does: the device, the folder's checks, the weights' checks.

`AutoModelForCausalLM.from_pretrained` loads a folder whose weights miss tensors (initialising them at random), hold
extra ones, or hold NaN, and says so in a log line at most; a damaged file comes back as a long traceback. The
programs (run_inference.py, inspect_model.py, train_accelerate.py's --model_name_or_path) load through
`load_checked_model`, which turns each of those into one clear error. It also reads the book's own checkpoints: a
seed `.pth` file is converted in memory, with the converter's reader and checks (gpt2edu/convert_sources.py), and
nothing is written.
"""

import json
import logging
import os
import pickle
import re
from pathlib import Path

import torch
from huggingface_hub.utils import HFValidationError, validate_repo_id
from safetensors import SafetensorError, safe_open
from transformers import CONFIG_MAPPING, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

import modeling_gpt2edu  # noqa: F401  (registers gpt2edu with the Auto classes)
from tokenization_gpt2edu import gpt2_tokenizer

from .cli import few, first_line, quiet_transformers

logger = logging.getLogger(__name__)

# Files that make a folder's own tokenizer: a folder with none of them gets GPT-2's tokenizer.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "tokenizer.model")
WEIGHT_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
)
# Model classes that are no language model: their folders hold a task head where a causal LM has its output head.
# Each suffix -> the pipeline task and the Auto class that load one.
TASK_HEADS = {
    "ForSequenceClassification": ("text-classification", "AutoModelForSequenceClassification"),
    "ForTokenClassification": ("token-classification", "AutoModelForTokenClassification"),
    "ForQuestionAnswering": ("question-answering", "AutoModelForQuestionAnswering"),
}


def looks_like_hub_id(name: str) -> bool:
    """Whether `name` is shaped like a Hub model id ('name' or 'owner/name') rather than a path or a file name."""
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name:
        return False
    if name.endswith((".pth", ".pt", ".bin", ".safetensors")):
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def first_non_finite(tensors) -> tuple[str, int, int] | None:
    """The first floating-point tensor of `(name, tensor)` pairs holding NaN or infinity: (name, how many, of how
    many); None when every value is finite."""
    for name, tensor in tensors:
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            return name, int((~torch.isfinite(tensor)).sum()), tensor.numel()
    return None


MISSING_OR_UNEXPECTED = ("missing_keys", "unexpected_keys")  # from_pretrained's loading info: lists of names


def checkpoint_name(name: str) -> str:
    """A gpt2edu tensor's name in its checkpoint files, to name it to the user.

    gpt2edu's output head is `lm_head` in the model and `out_head.weight`, the seed's name, in its files (the renaming
    modeling_gpt2edu registers with transformers); every other name is the same in both.
    """
    return "out_head.weight" if name == "lm_head.weight" else name


def model_name(name: str) -> str:
    """The model's name of a tensor its checkpoint files name `name` (the inverse of `checkpoint_name`)."""
    return "lm_head.weight" if name == "out_head.weight" else name


def checkpoint_names(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A gpt2edu state dict under the names its checkpoint files use (`checkpoint_name`)."""
    return {checkpoint_name(name): tensor for name, tensor in state_dict.items()}


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
    check_language_model(folder, config.get("architectures"))
    check_generation_config(folder)


def check_language_model(name: str, architectures) -> None:
    """Refuse a task-head model (a classifier, a tagger...): it has no output head over the vocabulary to generate.

    Raises:
        ValueError: Naming the model's class and how to use it instead.
    """
    for architecture in architectures if isinstance(architectures, list) else ():
        for suffix, (task, auto_class) in TASK_HEADS.items():
            if isinstance(architecture, str) and architecture.endswith(suffix):
                raise ValueError(
                    f"{name} holds a {architecture}, a {task.replace('-', ' ')} model, not a language model: it "
                    f"has no output head to generate text with; use it with pipeline({task!r}, model=...) or "
                    f"{auto_class}, or pass a causal LM folder"
                )


def check_generation_config(folder: str) -> None:
    """Refuse a generation_config.json that is not a JSON object: transformers skips it without a word.

    from_pretrained then generates with default settings instead of the folder's (its eos token, its sampling),
    so the damage would only show in the text.

    Raises:
        ValueError: Naming the file and the fix.
    """
    path = os.path.join(folder, "generation_config.json")
    if not os.path.isfile(path):
        return
    try:
        with open(path, encoding="utf-8") as file:
            settings = json.load(file)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        settings, reason = None, f"not valid JSON ({error})"
    else:
        reason = f"a JSON {type(settings).__name__}, not an object of settings"
    if not isinstance(settings, dict):
        raise ValueError(
            f"{path} is {reason}; transformers would ignore it and generate with its default settings: repair the "
            "file, or delete it to generate with the model's own defaults"
        )


def damaged_weights_message(folder: str, error: Exception) -> str:
    """One line naming the weight file from_pretrained could not read, and why."""
    reason = first_line(error)
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


def check_loading_info(name_or_path: str, info: dict) -> None:
    """Refuse what from_pretrained's loading info reports: tensors missing, unexpected, or shaped otherwise.

    Raises:
        ValueError: Naming the first tensors concerned (and, for a mis-shaped one, both shapes).
    """
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


def load_checked_model(name_or_path: str, **from_pretrained_kwargs) -> PreTrainedModel:
    """`AutoModelForCausalLM.from_pretrained`, refusing what transformers only warns about; or a seed `.pth` file.

    transformers loads a folder whose weights lack tensors the config needs (initialising them at random), or hold
    tensors it does not need, or NaN/inf values, and reports it in a log line at most. A model like that generates
    garbage, so here each is an error naming the first tensors concerned. Damaged weight files and a config.json
    whose sizes disagree with the weights are reported in one line too, naming the file or the tensor. A file
    (rather than a folder) is read as the seed's checkpoint (`load_seed_checkpoint`).

    Raises:
        ValueError: For a damaged weight file, missing, unexpected or mis-shaped tensors, or non-finite weights.
        OSError: As from_pretrained, for a folder or Hub id that cannot be read.
    """
    if os.path.isfile(name_or_path):
        if from_pretrained_kwargs:
            raise ValueError(f"{name_or_path} is a seed checkpoint file: from_pretrained's arguments do not apply")
        return load_seed_checkpoint(name_or_path)
    local = os.path.isdir(name_or_path)
    if local:
        check_model_folder(name_or_path)
    # Mis-shaped tensors then come back in the loading info, which names them, instead of as an error that
    # suggests ignore_mismatched_sizes (a from_pretrained argument that would load them at random).
    from_pretrained_kwargs.setdefault("ignore_mismatched_sizes", True)
    try:
        with quiet_transformers():  # the load report becomes our error below, not a warning above it
            model, info = AutoModelForCausalLM.from_pretrained(
                name_or_path, output_loading_info=True, **from_pretrained_kwargs
            )
    except (SafetensorError, pickle.UnpicklingError, EOFError, RuntimeError) as error:
        pickled = local and not any(name.endswith(".safetensors") for name in os.listdir(name_or_path))
        if local and (isinstance(error, SafetensorError) or pickled):
            raise ValueError(damaged_weights_message(name_or_path, error)) from error
        raise
    state_dict = model.state_dict()
    if model.config.model_type == "gpt2edu":  # name the head as the folder's files do
        state_dict = checkpoint_names(state_dict)
        mismatched = [(checkpoint_name(key), *shapes) for key, *shapes in info.get("mismatched_keys") or ()]
        info = {**info, "mismatched_keys": mismatched}
        info.update({kind: {checkpoint_name(key) for key in info.get(kind) or ()} for kind in MISSING_OR_UNEXPECTED})
    check_loading_info(name_or_path, info)
    non_finite = first_non_finite(state_dict.items())
    if non_finite:
        name, bad, total = non_finite
        raise ValueError(
            f"{name_or_path}: weight {name} holds NaN or infinite values ({bad} of {total}); the file is "
            "damaged or the training that wrote it diverged"
        )
    return model


def load_seed_checkpoint(path: str) -> PreTrainedModel:
    """A seed `.pth` file (the book's `torch.save(model.state_dict(), ...)`, or a training checkpoint) as a gpt2edu
    causal LM, converted in memory: nothing is written.

    The converter's reader and checks (gpt2edu/convert_sources.py): weights-only unpickling, the keys and shapes
    against the config stored in the file or in NAME.config.json beside it (a bare state dict without one: head
    size 64, GPT-2's at every size, with a warning), every value finite. The tensors stay memory-mapped, privately:
    training the model never writes into the file.

    Raises:
        ValueError: For a file that is not a seed checkpoint, or the book's classifier (it cannot generate).
    """
    from . import convert_outputs, convert_sources  # imported here: they import this module

    source = convert_sources.read_seed_checkpoint(Path(path))
    convert_sources.check_source_tensors(source)
    check_language_model(path, source.config.architectures)
    return convert_outputs.build_model(source)


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
    """Load a causal LM and its tokenizer from a folder, a Hub id or a seed `.pth` file.

    A folder without tokenizer files gets GPT-2's tokenizer (built from tiktoken), which every gpt2edu model uses; so
    does a seed checkpoint, converted in memory (`load_seed_checkpoint`).

    Raises:
        ValueError: If a local path does not exist, holds no model or a damaged one (see `load_checked_model`), or
            has tokenizer files that cannot be loaded.
    """
    try:
        model = load_checked_model(name_or_path)
    except OSError as error:  # HF: raised both for a missing local folder and for a Hub id that cannot be fetched
        where = "no such folder, and not found on the Hugging Face Hub" if not os.path.exists(name_or_path) else ""
        raise ValueError(f"cannot load model {name_or_path!r}: {where or first_line(error)}") from error
    if os.path.isfile(name_or_path):  # the seed's checkpoints hold no tokenizer: the seed's is GPT-2's
        tokenizer = gpt2_tokenizer()
        tokenizer.model_max_length = model.config.context_length
    else:
        tokenizer = load_tokenizer(name_or_path)
    return model.to(device).eval(), tokenizer
