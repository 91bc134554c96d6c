"""Reading what convert_checkpoint.py converts, and checking it: seed .pth files, model folders, Hub snapshots.

`read_source` reads any of them into gpt2edu's layout (the name tables and maps of gpt2edu/convert_maps.py); the
converter calls it, and so does every program given a .pth file (gpt2edu/loading.py), with the same checks.

Checkpoints are untrusted input: a .pth file is a pickle, and unpickling can run any code. They are read with
`torch.load(weights_only=True)`, which builds only tensors and plain Python values; the seed's pickled config class
is let in as plain data under its exact name. What is read is checked before anything is built from it: the keys and
shapes against the model its config describes, the config against the tensors, the values for NaN and infinity.
"""

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedModel

import modeling_gpt2edu  # its task heads: GPT2EduForSequenceClassification for the book's classifier
from configuration_gpt2edu import GPT2EduConfig
from modeling_gpt2edu import GPT2EduForCausalLM

from . import convert_maps as maps
from .cli import few, first_line
from .loading import checkpoint_names, first_non_finite, looks_like_hub_id, model_name

logger = logging.getLogger(__name__)

SEED_HEAD_DIM = 64  # GPT-2's head size at every scale: the guess when a bare state dict gives no n_heads
# What a Hub download fetches: the config and the weights, nothing else (no TF, Flax or ONNX copies).
HUB_FILES = ["config.json", "model.safetensors", "model.safetensors.index.json", "model-*.safetensors"]


@dataclass
class Source:
    """A checkpoint read into gpt2edu's layout, with what it was."""

    description: str  # what was read, for the summary and the model card
    config: GPT2EduConfig
    state_dict: dict[str, torch.Tensor]


# --- checking tensors against a model ------------------------------------------------------------------------------


def describe_key_mismatch(missing: list[str], unexpected: list[str], shown: int = 4) -> str:
    """'missing keys a, b (+3 more); unexpected keys c' in one line."""
    parts = [f"missing keys {few(missing, shown)}"] if missing else []
    parts += [f"unexpected keys {few(unexpected, shown)}"] if unexpected else []
    return "; ".join(parts)


def check_state_dict(
    state_dict: dict[str, torch.Tensor],
    expected_shapes: dict[str, torch.Size],
    what: str,
    optional: tuple[str, ...] = (),
    ignored: tuple[str, ...] = (),
) -> None:
    """Raise ValueError unless the state dict has exactly the expected keys, each with the expected shape.

    Args:
        state_dict: The tensors to check.
        expected_shapes: Name -> shape of every tensor the model needs.
        what: How to call the checkpoint in the message, e.g. "gpt2_model.pth is not a seed GPT checkpoint".
        optional: Expected keys that may be absent (a tied output head).
        ignored: Keys that may be present and are not needed (buffers).
    """
    missing = [key for key in expected_shapes if key not in state_dict and key not in optional]
    unexpected = [key for key in state_dict if key not in expected_shapes and key not in ignored]
    if missing or unexpected:
        raise ValueError(f"{what}: {describe_key_mismatch(missing, unexpected)}")
    for name, shape in expected_shapes.items():
        if name in state_dict and state_dict[name].shape != shape:
            raise ValueError(
                f"{what}: tensor {name} has shape {tuple(state_dict[name].shape)}, but its config needs {tuple(shape)}"
            )


def model_class_of(config) -> type[PreTrainedModel]:
    """The gpt2edu class a config describes: the causal LM, or the book's chapter-6 sequence classifier."""
    if maps.is_sequence_classifier(config):
        return modeling_gpt2edu.GPT2EduForSequenceClassification
    return GPT2EduForCausalLM


def empty_model(model_class: type[PreTrainedModel], config) -> PreTrainedModel:
    """A model on the meta device: its parameters have names and shapes, and take no memory."""
    with torch.device("meta"):
        return model_class(config)


def model_shapes(model_class: type[PreTrainedModel], config) -> dict[str, torch.Size]:
    """Name -> shape of every tensor in the state dict of `model_class(config)`, without building its weights."""
    return {name: tensor.shape for name, tensor in empty_model(model_class, config).state_dict().items()}


def check_source_tensors(source: Source) -> None:
    """Refuse tensors that cannot be model weights: not floating point, or holding NaN or infinity.

    A NaN head or an infinite embedding converts and loads without a word, and the model then prints `!!!!!`; better
    to say which tensor is broken, before anything is written.
    """
    for name, tensor in source.state_dict.items():
        if not tensor.is_floating_point():
            raise ValueError(
                f"{source.description}: tensor {name} holds {str(tensor.dtype).removeprefix('torch.')} values, not "
                "floating point weights; this is not a model checkpoint (or it was saved after a .long()/.int())"
            )
    non_finite = first_non_finite(checkpoint_names(source.state_dict).items())  # the head as its files name it
    if non_finite:
        name, bad, total = non_finite
        raise ValueError(
            f"{source.description}: tensor {name} holds {bad} NaN or infinite value(s) of {total}; the "
            "checkpoint is damaged or the training that wrote it diverged"
        )


def check_dtype_range(state_dict: dict[str, torch.Tensor], dtype: torch.dtype) -> None:
    """Refuse a --dtype that cannot hold the weights: values beyond its range would be written as infinity."""
    limit = torch.finfo(dtype).max
    overflowing = [name for name, tensor in state_dict.items() if tensor.abs().max() > limit]
    if overflowing:
        name = str(dtype).removeprefix("torch.")
        raise ValueError(
            f"--dtype {name} cannot hold these weights: {few(overflowing)} exceed(s) its largest value {limit:g}; "
            "keep float32 or use bfloat16, which has float32's range"
        )


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two tensors have the same dtype, shape and bytes (unlike ==, this holds for NaNs too)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    # speed: compare as integers of the element's width (int32 for float32): a quarter of the comparisons of bytes.
    as_int = {2: torch.int16, 4: torch.int32, 8: torch.int64}.get(a.element_size(), torch.uint8)
    return torch.equal(a.reshape(-1).view(as_int), b.reshape(-1).view(as_int))


# --- the seed's .pth files -----------------------------------------------------------------------------------------


class PickledSeedConfig:
    """Stand-in for the seed's `config.GPTConfig` dataclass while unpickling: it receives the fields as plain data.

    A pickled dataclass is "make an empty object of class config.GPTConfig, then fill its __dict__". The weights-only
    unpickler allows that for classes registered with `torch.serialization.safe_globals`; registering this class under
    the name "config.GPTConfig" means no class of the seed's is ever imported and no code from the file runs.
    """

    def __setstate__(self, state):
        if isinstance(state, tuple):  # a dataclass with __slots__ pickles as (dict state, slot state)
            state = {**(state[0] or {}), **(state[1] or {})}
        self.fields = dict(state)


def load_checkpoint_file(path: Path):
    """`torch.load` an untrusted .pth/.pt file: tensors and plain data only, memory-mapped when possible.

    Raises:
        ValueError: If the file is not a readable PyTorch checkpoint, or its pickle would run anything else.
    """
    with open(path, "rb") as file:
        is_zip = file.read(4) == b"PK\x03\x04"  # torch.save's format since 1.6; older files are a bare pickle
    try:
        with torch.serialization.safe_globals([(PickledSeedConfig, "config.GPTConfig")]):
            # mmap: tensors stay in the file until touched, so loading costs no memory of its own. It needs the zip
            # format; old-format files take the same weights-only path without it.
            return torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except Exception as error:  # untrusted bytes: any failure to parse them means "not a usable checkpoint"
        forbidden = re.search(r"GLOBAL (\S+)", str(error))
        if forbidden:
            raise ValueError(
                f"refusing to load {path}: its pickle would import {forbidden.group(1)}, which is not plain data "
                "(only tensors, plain Python values and the seed's config.GPTConfig are read from checkpoints)"
            ) from error
        raise ValueError(
            f"cannot read {path} as a PyTorch checkpoint (truncated? not a .pth?): {first_line(error)}"
        ) from error


def is_state_dict(value) -> bool:
    """Whether `value` is a dict of tensors."""
    return isinstance(value, dict) and all(isinstance(tensor, torch.Tensor) for tensor in value.values())


def load_seed_file(path: Path) -> tuple[dict[str, torch.Tensor], dict | None, str]:
    """Read a seed .pth file: a bare state dict, or `save_checkpoint`'s dict with `model_state_dict` and a config.

    Returns:
        The state dict as stored, the config fields stored with it (None if none), and which form the file has.

    Raises:
        ValueError: For a file that holds neither form.
    """
    checkpoint = load_checkpoint_file(path)
    stored, form = None, "bare state dict"
    if isinstance(checkpoint, dict) and "model_state_dict" in checkpoint:
        state_dict, stored = checkpoint["model_state_dict"], checkpoint.get("config")
        form = "training checkpoint"
        if isinstance(stored, PickledSeedConfig):
            stored, form = stored.fields, form + " with a pickled config.GPTConfig"
        elif isinstance(stored, dict):
            form += " with a config dict"
        elif stored is not None:
            raise ValueError(f"{path}: the checkpoint's config is a {type(stored).__name__}, not the seed's fields")
    else:
        state_dict = checkpoint
    if not is_state_dict(state_dict):
        raise ValueError(f"{path} holds a {type(state_dict).__name__}, not a state dict or a seed training checkpoint")
    return state_dict, stored, form


def seed_config_file(path: Path) -> Path:
    """Where the seed's config fields are kept beside a bare state dict: gpt2_model.pth -> gpt2_model.config.json."""
    return path.with_name(path.stem + ".config.json")


def read_seed_config_file(path: Path, field_names: tuple[str, ...]) -> dict:
    """The seed config fields stored in a JSON file (the dict the book passes to `GPTModel(cfg)`)."""
    try:
        fields = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read the seed config {path}: {error}") from error
    if not isinstance(fields, dict) or not set(fields) <= set(field_names):
        raise ValueError(f"{path} is not a seed config: expected a JSON object with {', '.join(field_names)}")
    return fields


def seed_sizes_from_state_dict(state_dict: dict[str, torch.Tensor]) -> dict:
    """The seed config fields that tensor shapes reveal: all but n_heads (and drop_rate, which has no tensor)."""
    blocks = {int(key.split(".")[1]) for key in state_dict if re.fullmatch(r"trf_blocks\.\d+\..+", key)}
    vocab_size, emb_dim = state_dict["tok_emb.weight"].shape
    return dict(
        vocab_size=vocab_size,
        emb_dim=emb_dim,
        context_length=state_dict["pos_emb.weight"].shape[0],
        n_layers=max(blocks) + 1 if blocks else 0,
        qkv_bias="trf_blocks.0.att.W_query.bias" in state_dict,
    )


def seed_config_fields(path: Path, state_dict: dict[str, torch.Tensor], stored: dict | None, n_heads: int | None):
    """The seed config fields of a checkpoint: the stored ones, checked against the tensors, and n_heads.

    n_heads is the stored one, or --n-heads, or (for a bare state dict) emb_dim / 64, with a warning.

    Raises:
        ValueError: If the stored config contradicts the tensors or --n-heads.
    """
    sizes = seed_sizes_from_state_dict(state_dict)
    for name, value in (stored or {}).items():
        if name in sizes and value != sizes[name] and name != "qkv_bias":
            raise ValueError(
                f"{path}: the checkpoint's config says {name}={value!r}, but its tensors have {name}={sizes[name]!r}; "
                "the config and the weights come from different models"
            )
    fields = sizes | (stored or {})
    if n_heads is not None and stored and "n_heads" in stored and stored["n_heads"] != n_heads:
        raise ValueError(f"conflicting --n-heads {n_heads}: the checkpoint's config says n_heads={stored['n_heads']}")
    if n_heads is not None:
        fields["n_heads"] = n_heads
    elif "n_heads" not in fields:
        if fields["emb_dim"] % SEED_HEAD_DIM:
            emb_dim, sidecar = fields["emb_dim"], seed_config_file(path).name
            raise ValueError(
                f"{path} stores no config and emb_dim {emb_dim} is no multiple of 64: pass --n-heads (a program "
                f"other than convert_checkpoint.py reads the seed's config fields from {sidecar} beside it)"
            )
        fields["n_heads"] = fields["emb_dim"] // SEED_HEAD_DIM
        logger.warning(
            "%s stores no config: assuming head size %d, so n_heads = %d. Pass --n-heads (or write the seed's config "
            "fields into %s) if the model was trained with another number of heads (a wrong value gives a model that "
            "loads but computes garbage).",
            path,
            SEED_HEAD_DIM,
            fields["n_heads"],
            seed_config_file(path).name,
        )
    return fields


# --- save_pretrained folders, local or from the Hub ----------------------------------------------------------------


def safetensors_files(folder: Path) -> list[Path]:
    """The safetensors files of a save_pretrained folder: model.safetensors, or the shards its index lists."""
    index = folder / "model.safetensors.index.json"
    if (folder / "model.safetensors").is_file():
        return [folder / "model.safetensors"]
    if index.is_file():
        return [folder / name for name in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    return []


def load_weights_from_folder(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of a save_pretrained folder (safetensors, or an older pytorch_model.bin), memory-mapped."""
    files = safetensors_files(folder)
    if not files and (folder / "pytorch_model.bin").is_file():
        state_dict = load_checkpoint_file(folder / "pytorch_model.bin")
        if not is_state_dict(state_dict):
            raise ValueError(f"{folder / 'pytorch_model.bin'} is not a state dict")
        return state_dict
    if not files:
        raise ValueError(f"{folder} holds no model.safetensors or pytorch_model.bin")
    state_dict = {}
    for file in files:
        try:
            with safe_open(file, framework="pt") as weights:
                state_dict.update({name: weights.get_tensor(name) for name in weights.keys()})
        except Exception as error:  # safetensors raises its own error types for damaged files
            raise ValueError(f"cannot read {file}: {error}") from error
    return state_dict


def load_hf_folder(folder: Path) -> tuple[str, dict[str, torch.Tensor]]:
    """The model type ("gpt2edu" or "gpt2") of a save_pretrained folder, and its tensors as stored.

    Raises:
        ValueError: For a folder without config.json, of another model type, or without readable weights.
    """
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ValueError(f"{folder} is a folder without config.json: pass a model folder or a seed .pth file")
    try:
        model_type = json.loads(config_file.read_text()).get("model_type")
    except (json.JSONDecodeError, AttributeError) as error:
        raise ValueError(f"{config_file} is not a JSON object: {error}") from error
    if model_type not in ("gpt2edu", "gpt2"):
        raise ValueError(f"{folder} holds a {model_type!r} model; this converter reads gpt2edu and gpt2 models")
    return model_type, load_weights_from_folder(folder)


def check_block_count(state_dict: dict[str, torch.Tensor], n_layers: int, what: str) -> None:
    """Refuse a config whose layer count differs from the blocks in the weights, before building a model from it.

    A config of 200,000 layers would take minutes to build before the shapes could be compared.
    """
    blocks = {int(match.group(1)) for key in state_dict if (match := re.search(r"(?:trf_blocks|\.h)\.(\d+)\.", key))}
    if n_layers != len(blocks):
        raise ValueError(f"{what}: config.json says {n_layers} layers, its weights hold {len(blocks)} blocks")


def download_from_hub(repo_id: str, revision: str | None = None) -> Path:
    """Fetch a Hub model's config and weights (or take them from the local Hub cache); return the snapshot folder.

    Safetensors weights when the repo has them; otherwise its pytorch_model.bin, read weights-only like any .pth.
    """
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(repo_id, revision=revision, allow_patterns=HUB_FILES))
        if not safetensors_files(folder):
            folder = Path(snapshot_download(repo_id, revision=revision, allow_patterns=["pytorch_model.bin"]))
    except Exception as error:  # network edge: offline, unknown repo or revision, auth, HTTP errors
        message = (
            f"{repo_id} is no local file or folder, and it could not be fetched from the Hub: {first_line(error)}"
        )
        raise ValueError(message) from error
    return folder


# --- reading a source into gpt2edu's layout ------------------------------------------------------------------------


def seed_head_is_embedding(state_dict: dict[str, torch.Tensor]) -> bool:
    """Whether a seed state dict's output head is its token embedding: absent, the same memory, or equal bits.

    The book ties the head for OpenAI's weights (`model.out_head.weight = model.tok_emb.weight`); torch.save keeps the
    two names on one storage, and a copy of the same values computes the same model.
    """
    head, embedding = state_dict.get("out_head.weight"), state_dict.get("tok_emb.weight")
    if head is None:
        return True
    if embedding is None or head.shape != embedding.shape or head.dtype != embedding.dtype:
        return False
    same_memory = head.data_ptr() == embedding.data_ptr() and head.stride() == embedding.stride()
    return same_memory or same_bits(head, embedding)


def seed_classifier_rows(state_dict: dict[str, torch.Tensor]) -> int | None:
    """The number of outputs of the book's chapter-6 classifier head, or None for a language model's head.

    The book swaps `out_head` for `Linear(emb_dim, num_classes)`: a head whose rows are not the vocabulary's.
    """
    head, embedding = state_dict.get("out_head.weight"), state_dict["tok_emb.weight"]
    if head is None or head.dim() != 2 or head.shape[0] == embedding.shape[0]:
        return None
    return head.shape[0]


def read_seed_checkpoint(path: Path, n_heads: int | None = None) -> Source:
    """Read a seed .pth file (a bare state dict, or `save_checkpoint`'s dict with a config) into gpt2edu's layout.

    The book's chapter-6 classifier (its head swapped for `Linear(emb_dim, num_classes)`) reads as a sequence
    classifier (`convert_maps.seed_classifier_config`).

    Args:
        path: The file. Its config is the one stored in it, else NAME.config.json beside it, else --n-heads.
        n_heads: Number of attention heads, for files that store no config (shapes do not reveal it).

    Raises:
        ValueError: For anything that is not a seed checkpoint, or a --n-heads that contradicts the stored config.
    """
    as_stored, stored, form = load_seed_file(path)
    state_dict = maps.strip_wrapper_prefixes(as_stored)
    prefixes = sorted({key.removesuffix(name) for key, name in zip(as_stored, state_dict, strict=True) if key != name})
    if prefixes:
        form += ", keys prefixed " + " and ".join(prefixes)
    sidecar = seed_config_file(path)
    if stored is None and sidecar.is_file():
        stored = read_seed_config_file(sidecar, maps.SEED_CONFIG_FIELDS)
        form += f" with its config in {sidecar.name}"
    what = f"{path} is not a seed GPT checkpoint"
    if "tok_emb.weight" not in state_dict or "pos_emb.weight" not in state_dict:  # raises: keys are missing
        check_state_dict(state_dict, dict.fromkeys(maps.seed_rename_table(12, False)), what)
    rows = seed_classifier_rows(state_dict)
    tied = rows is None and seed_head_is_embedding(state_dict)
    if tied:
        state_dict = {name: tensor for name, tensor in state_dict.items() if name != "out_head.weight"}
        form += ", output head tied to the token embedding"
    config = maps.seed_config_to_gpt2edu(seed_config_fields(path, state_dict, stored, n_heads), tied)
    if rows is not None:
        config = maps.seed_classifier_config(config, rows, bias="out_head.bias" in state_dict)
        form += f", the book's classifier: a {rows}-output head"

    shapes = model_shapes(model_class_of(config), config)
    table = maps.seed_rename_table(config.n_layers, config.qkv_bias, classifier=rows is not None)
    expected = {seed: shapes[ours] for seed, ours in table.items() if ours in shapes}
    buffers = tuple(f"trf_blocks.{i}.{name}" for i in range(config.n_layers) for name in maps.SEED_BUFFER_KEYS)
    optional = ("out_head.weight",) if tied else ()
    check_state_dict(state_dict, expected, what, optional=optional, ignored=buffers)
    state_dict = maps.seed_to_gpt2edu_state_dict(state_dict, config.n_layers, config.qkv_bias, rows is not None)
    return Source(f"seed checkpoint {path.name} ({form})", config, state_dict)


def read_hf_folder(folder: Path) -> Source:
    """Read a save_pretrained folder of a gpt2edu model (a causal LM or a sequence classifier) or a transformers
    GPT-2 into gpt2edu's layout."""
    model_type, state_dict = load_hf_folder(folder)
    head = "lm_head.weight"
    if model_type == "gpt2edu":
        config = model_config = GPT2EduConfig.from_pretrained(folder)
        model_class, embedding = model_class_of(config), "model.tok_emb.weight"
        if maps.is_sequence_classifier(config):
            head = None  # its head, `score`, is never tied to the embedding
        # HF: the file names the head out_head.weight (the seed's name), the model lm_head, as from_pretrained maps it
        state_dict = {model_name(name): tensor for name, tensor in state_dict.items()}
    else:
        model_config = GPT2Config.from_pretrained(folder)
        config = maps.gpt2_config_to_gpt2edu(model_config)
        model_class, embedding = GPT2LMHeadModel, "transformer.wte.weight"
        state_dict = maps.normalize_gpt2_keys(state_dict)
    what = f"{folder} does not hold the {model_type} model its config describes"
    check_block_count(state_dict, config.n_layers, what)
    optional = (head,) if head and config.tie_word_embeddings else ()
    check_state_dict(state_dict, model_shapes(model_class, model_config), what, optional=optional)
    if head:
        state_dict.setdefault(head, state_dict[embedding])  # save_pretrained writes a tied head once, as the embedding
    if model_type == "gpt2":
        state_dict = maps.gpt2_to_gpt2edu_state_dict(state_dict, config.n_layers)
    return Source(f"{model_type} folder {folder.name}", config, state_dict)


def read_source(src: str | Path, n_heads: int | None = None, revision: str | None = None) -> Source:
    """Detect what SRC is (a model folder, a seed checkpoint file or a Hub id) and read it into gpt2edu's layout."""
    path = Path(src)
    if revision is not None and path.exists():
        raise ValueError(f"--revision is for Hub model ids; {src} is a local path")
    if not path.exists() and looks_like_hub_id(str(src)):
        if n_heads is not None:
            raise ValueError(f"--n-heads is for seed checkpoints without a config; {src} is a Hub model id")
        source = read_hf_folder(download_from_hub(str(src), revision))
        source.description = f"{source.description.split(' ', 1)[0]} model {src} from the Hub" + (
            f" (revision {revision})" if revision else ""
        )
        return source
    if path.is_dir():
        if n_heads is not None:
            raise ValueError(f"--n-heads is for seed checkpoints without a config; {src} has a config.json")
        return read_hf_folder(path)
    if not path.is_file():
        raise ValueError(f"no such file or folder: {src}")
    return read_seed_checkpoint(path, n_heads)
