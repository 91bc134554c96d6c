"""Convert between the seed's .pth checkpoints, transformers' own GPT-2 folders and gpt2edu folders.

    python convert_checkpoint.py gpt2_model.pth gpt2edu-124m                # seed checkpoint -> gpt2edu folder
    python convert_checkpoint.py gpt2edu-124m gpt2-124m --to gpt2           # gpt2edu folder -> plain GPT-2 folder
    python convert_checkpoint.py gpt2-folder gpt2edu-openai                 # transformers GPT-2 -> gpt2edu
    python convert_checkpoint.py openai-community/gpt2 gpt2edu-openai       # a Hub model id -> gpt2edu
    python convert_checkpoint.py gpt2edu-124m back.pth                      # gpt2edu folder -> seed checkpoint
    python convert_checkpoint.py gpt2_model.pth out --push-to-hub you/gpt2edu-124m

The mapping between layouts is a set of pure functions from state dict to state dict, each driven by an explicit
rename table; the rest of the file only loads, calls and writes. Every conversion goes through gpt2edu's layout:
source -> gpt2edu -> target.

Checkpoints are untrusted input: a .pth file is a pickle, and unpickling can run any code. They are read with
`torch.load(weights_only=True)`, which builds only tensors and plain Python values; the seed's pickled config class
is let in as plain data under its exact name. Output is written into a temporary folder (or file) beside OUT, loaded
back the way a user will load it, compared parameter by parameter with the source, and renamed into place only then.
"""

import argparse
import contextlib
import errno
import glob
import json
import logging
import os
import re
import secrets
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub import CommitOperationAdd, HfApi
from safetensors import safe_open
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, PreTrainedModel
from transformers.utils import logging as transformers_logging

from configuration_gpt2edu import GPT2EduConfig
from modeling_gpt2edu import GPT2EduForCausalLM
from tokenization_gpt2edu import save_gpt2_tokenizer

logger = logging.getLogger(__name__)

# --- the seed's layout ---------------------------------------------------------------------------------------------

# seed name -> gpt2edu name. gpt2edu keeps the seed's names; its body just sits under `model.`, as in every
# transformers *ForCausalLM, while the output head stays on top.
SEED_TOP_RENAMES = {
    "tok_emb.weight": "model.tok_emb.weight",
    "pos_emb.weight": "model.pos_emb.weight",
    "final_norm.scale": "model.final_norm.scale",
    "final_norm.shift": "model.final_norm.shift",
    "out_head.weight": "out_head.weight",
}
# Per block the names are the same on both sides: "trf_blocks.{i}.<name>" -> "model.trf_blocks.{i}.<name>".
SEED_BLOCK_KEYS = (
    "att.W_query.weight",
    "att.W_key.weight",
    "att.W_value.weight",
    "att.out_proj.weight",
    "att.out_proj.bias",
    "ff.layers.0.weight",
    "ff.layers.0.bias",
    "ff.layers.2.weight",
    "ff.layers.2.bias",
    "norm1.scale",
    "norm1.shift",
    "norm2.scale",
    "norm2.shift",
)
SEED_QKV_BIAS_KEYS = ("att.W_query.bias", "att.W_key.bias", "att.W_value.bias")  # only with qkv_bias=True
SEED_BUFFER_KEYS = ("att.mask",)  # the causal mask, a buffer the seed saves with its weights: not carried over
# Prefixes that wrappers put in front of every key: torch.compile's and DistributedDataParallel's.
WRAPPER_PREFIXES = ("_orig_mod.", "module.")
SEED_CONFIG_FIELDS = ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers", "drop_rate", "qkv_bias")
SEED_HEAD_DIM = 64  # GPT-2's head size at every scale: the guess when a bare state dict gives no n_heads

# --- transformers' GPT-2 layout ------------------------------------------------------------------------------------

# gpt2edu name -> transformers GPT-2 name, per block. Every GPT-2 weight here is a Conv1D, stored (in, out): the
# transpose of nn.Linear's (out, in). The fused c_attn holds query, key and value side by side.
GPT2_BLOCK_RENAMES = {
    "norm1.scale": "ln_1.weight",
    "norm1.shift": "ln_1.bias",
    "att.out_proj.weight": "attn.c_proj.weight",
    "att.out_proj.bias": "attn.c_proj.bias",
    "norm2.scale": "ln_2.weight",
    "norm2.shift": "ln_2.bias",
    "ff.layers.0.weight": "mlp.c_fc.weight",
    "ff.layers.0.bias": "mlp.c_fc.bias",
    "ff.layers.2.weight": "mlp.c_proj.weight",
    "ff.layers.2.bias": "mlp.c_proj.bias",
}
GPT2_TOP_RENAMES = {
    "model.tok_emb.weight": "transformer.wte.weight",
    "model.pos_emb.weight": "transformer.wpe.weight",
    "model.final_norm.scale": "transformer.ln_f.weight",
    "model.final_norm.shift": "transformer.ln_f.bias",
    "out_head.weight": "lm_head.weight",
}
QKV = ("W_query", "W_key", "W_value")
# Causal-mask buffers that old transformers versions saved in pytorch_model.bin files.
GPT2_BUFFER_SUFFIXES = (".attn.bias", ".attn.masked_bias")


# --- pure mappings: configs -------------------------------------------------------------------------------------


def gpt2_config_to_gpt2edu(config: GPT2Config) -> GPT2EduConfig:
    """The gpt2edu config of a transformers GPT-2; raises ValueError for GPT-2 variants gpt2edu cannot express."""
    unsupported = {
        "activation_function": (config.activation_function, ("gelu_new", "gelu_pytorch_tanh")),
        "n_inner": (config.n_inner, (None, 4 * config.n_embd)),
        "scale_attn_weights": (config.scale_attn_weights, (True,)),
        "scale_attn_by_inverse_layer_idx": (config.scale_attn_by_inverse_layer_idx, (False,)),
        "add_cross_attention": (config.add_cross_attention, (False,)),
    }
    for name, (value, allowed) in unsupported.items():
        if value not in allowed:
            raise ValueError(f"GPT-2 config has {name}={value!r}; gpt2edu supports only {allowed}.")
    if len({config.resid_pdrop, config.embd_pdrop, config.attn_pdrop}) != 1:
        raise ValueError("GPT-2 config uses different dropout rates; gpt2edu has one drop_rate for all three.")
    return GPT2EduConfig(
        vocab_size=config.vocab_size,
        context_length=config.n_positions,
        emb_dim=config.n_embd,
        n_heads=config.n_head,
        n_layers=config.n_layer,
        drop_rate=float(config.resid_pdrop),
        qkv_bias=True,
        tie_word_embeddings=bool(config.tie_word_embeddings),
        layer_norm_eps=config.layer_norm_epsilon,
        initializer_range=config.initializer_range,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
    )


def gpt2edu_config_to_gpt2(config: GPT2EduConfig) -> GPT2Config:
    """The transformers GPT-2 config that computes what a gpt2edu config computes."""
    return GPT2Config(
        vocab_size=config.vocab_size,
        n_positions=config.context_length,
        n_embd=config.emb_dim,
        n_head=config.n_heads,
        n_layer=config.n_layers,
        resid_pdrop=config.drop_rate,
        embd_pdrop=config.drop_rate,
        attn_pdrop=config.drop_rate,
        activation_function="gelu_new",
        layer_norm_epsilon=config.layer_norm_eps,
        initializer_range=config.initializer_range,
        tie_word_embeddings=config.tie_word_embeddings,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
    )


def seed_config_to_gpt2edu(fields: dict, tied: bool = False) -> GPT2EduConfig:
    """The gpt2edu config of the seed's config fields (vocab_size, context_length, emb_dim, n_heads, ...).

    The seed's model has an output head of its own; `tied` says the checkpoint's head is its token embedding (as the
    book ties it for OpenAI's weights). `<|endoftext|>` (id 50256) is the bos/eos token only when the vocabulary has
    room for it.
    """
    values = {name: fields[name] for name in SEED_CONFIG_FIELDS if name in fields}
    try:
        endoftext = 50256 if values.get("vocab_size", 50257) > 50256 else None
        return GPT2EduConfig(**values, tie_word_embeddings=tied, bos_token_id=endoftext, eos_token_id=endoftext)
    except TypeError as error:  # e.g. a size or a drop_rate that is not a number
        raise ValueError(f"the checkpoint's config has a value of the wrong type: {error}") from error


# --- pure mappings: state dicts ---------------------------------------------------------------------------------


def strip_wrapper_prefixes(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove torch.compile's `_orig_mod.` and DDP's `module.` from the front of every key (in any nesting)."""
    out = {}
    for key, tensor in state_dict.items():
        name = key
        while name.startswith(WRAPPER_PREFIXES):
            name = name.split(".", 1)[1]
        if name in out:
            raise ValueError(f"the state dict holds {name!r} twice, with and without a wrapper prefix")
        out[name] = tensor
    return out


def seed_rename_table(n_layers: int, qkv_bias: bool) -> dict[str, str]:
    """Seed name -> gpt2edu name, for every weight of a seed model with this many blocks."""
    table = dict(SEED_TOP_RENAMES)
    block_keys = SEED_BLOCK_KEYS + (SEED_QKV_BIAS_KEYS if qkv_bias else ())
    for i in range(n_layers):
        table.update({f"trf_blocks.{i}.{name}": f"model.trf_blocks.{i}.{name}" for name in block_keys})
    return table


def seed_to_gpt2edu_state_dict(
    state_dict: dict[str, torch.Tensor], n_layers: int, qkv_bias: bool
) -> dict[str, torch.Tensor]:
    """Rename a seed state dict (prefixes already stripped) into gpt2edu's layout, dropping the causal-mask buffers.

    The tensors are not copied: the result holds the very same tensors under their new names. A state dict without
    `out_head.weight` (a tied head) gets the token embedding as its head.
    """
    out = {
        ours: state_dict[seed] for seed, ours in seed_rename_table(n_layers, qkv_bias).items() if seed in state_dict
    }
    out.setdefault("out_head.weight", out["model.tok_emb.weight"])
    return out


def gpt2edu_to_seed_state_dict(state_dict: dict[str, torch.Tensor], config: GPT2EduConfig) -> dict[str, torch.Tensor]:
    """gpt2edu's layout back to the seed's: its names, a head of its own, and each block's `att.mask` buffer.

    The seed's `GPTModel` registers the causal mask (1 above the diagonal) as a buffer, which its `state_dict()`
    includes and `load_state_dict(strict=True)` expects; it is stored in the weights' dtype, as `model.to(dtype)`
    leaves it.
    """
    out = {}
    for seed, ours in seed_rename_table(config.n_layers, config.qkv_bias).items():
        tensor = state_dict[ours]
        if seed == "out_head.weight" and tensor is state_dict["model.tok_emb.weight"]:
            tensor = tensor.clone()  # the seed's head is a parameter of its own, saved as its own tensor
        out[seed] = tensor
    dtype = state_dict["model.tok_emb.weight"].dtype
    mask = torch.triu(torch.ones(config.context_length, config.context_length), diagonal=1).to(dtype)
    for i in range(config.n_layers):
        out[f"trf_blocks.{i}.att.mask"] = mask.clone()  # one per block, as the seed's model saves them
    return out


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


def gpt2_to_gpt2edu_state_dict(state_dict: dict[str, torch.Tensor], n_layers: int) -> dict[str, torch.Tensor]:
    """Rename and reshape a transformers GPT2LMHeadModel state dict into gpt2edu's layout."""
    out = {ours: state_dict[theirs] for ours, theirs in GPT2_TOP_RENAMES.items() if theirs in state_dict}
    out.setdefault("out_head.weight", state_dict["transformer.wte.weight"])  # tied checkpoints may omit lm_head
    for i in range(n_layers):
        src, dst = f"transformer.h.{i}.", f"model.trf_blocks.{i}."
        for ours, theirs in GPT2_BLOCK_RENAMES.items():
            tensor = state_dict[src + theirs]
            out[dst + ours] = tensor.t().contiguous() if ours.endswith("weight") and tensor.dim() == 2 else tensor
        qkv_weight = state_dict[src + "attn.c_attn.weight"].t()  # (3 * emb_dim, emb_dim)
        qkv_bias = state_dict[src + "attn.c_attn.bias"]
        for name, weight, bias in zip(QKV, qkv_weight.chunk(3, dim=0), qkv_bias.chunk(3), strict=True):
            # Each chunk gets storage of its own: safetensors refuses to write views that share memory.
            out[f"{dst}att.{name}.weight"] = weight.contiguous()
            out[f"{dst}att.{name}.bias"] = bias.clone()
    return out


def gpt2edu_to_gpt2_state_dict(state_dict: dict[str, torch.Tensor], n_layers: int) -> dict[str, torch.Tensor]:
    """Rename and reshape a gpt2edu state dict into transformers GPT2LMHeadModel's layout (zero qkv bias if absent)."""
    out = {theirs: state_dict[ours] for ours, theirs in GPT2_TOP_RENAMES.items()}
    for i in range(n_layers):
        src, dst = f"model.trf_blocks.{i}.", f"transformer.h.{i}."
        for ours, theirs in GPT2_BLOCK_RENAMES.items():
            tensor = state_dict[src + ours]
            out[dst + theirs] = tensor.t().contiguous() if ours.endswith("weight") and tensor.dim() == 2 else tensor
        weights = [state_dict[f"{src}att.{name}.weight"] for name in QKV]
        # The seed's attention has no qkv bias; GPT-2's always has one, so a zero bias computes the same thing.
        zero = torch.zeros_like(weights[0][:, 0])
        biases = [state_dict.get(f"{src}att.{name}.bias", zero) for name in QKV]
        out[dst + "attn.c_attn.weight"] = torch.cat(weights, dim=0).t().contiguous()  # (emb_dim, 3 * emb_dim)
        out[dst + "attn.c_attn.bias"] = torch.cat(biases)
    return out


def normalize_gpt2_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Give a GPT-2 state dict GPT2LMHeadModel's key names: drop old mask buffers, add `transformer.` where missing.

    OpenAI's weights on the Hub were saved from the bare GPT2Model, whose keys lack the `transformer.` prefix.
    """
    out = {}
    for key, tensor in state_dict.items():
        if key.endswith(GPT2_BUFFER_SUFFIXES):
            continue
        out[key if key.startswith(("transformer.", "lm_head.")) else "transformer." + key] = tensor
    return out


def few(names: list[str], shown: int = 3) -> str:
    """'a, b, c (+2 more)': the first `shown` names, and how many more there are."""
    return ", ".join(names[:shown]) + (f" (+{len(names) - shown} more)" if len(names) > shown else "")


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


def empty_model(model_class: type[PreTrainedModel], config) -> PreTrainedModel:
    """A model on the meta device: its parameters have names and shapes, and take no memory."""
    with torch.device("meta"):
        return model_class(config)


# --- reading checkpoints ------------------------------------------------------------------------------------------


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
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"cannot read {path} as a PyTorch checkpoint (truncated? not a .pth?): {reason}") from error


@dataclass
class Source:
    """A checkpoint read into gpt2edu's layout, with what it was."""

    description: str  # what was read, for the summary and the model card
    config: GPT2EduConfig
    state_dict: dict[str, torch.Tensor]


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


def read_seed_checkpoint(path: Path, n_heads: int | None = None) -> Source:
    """Read a seed .pth file: a bare state dict, or `save_checkpoint`'s dict with `model_state_dict` and a config.

    Args:
        path: The file.
        n_heads: Number of attention heads, for files that store no config (shapes do not reveal it).

    Raises:
        ValueError: For anything that is not a seed checkpoint, or a --n-heads that contradicts the stored config.
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
    if not isinstance(state_dict, dict) or not all(isinstance(t, torch.Tensor) for t in state_dict.values()):
        raise ValueError(f"{path} holds a {type(state_dict).__name__}, not a state dict or a seed training checkpoint")
    stripped = strip_wrapper_prefixes(state_dict)
    prefixes = sorted({key.removesuffix(name) for key, name in zip(state_dict, stripped, strict=True) if key != name})
    if prefixes:
        form += ", keys prefixed " + " and ".join(prefixes)
    state_dict = stripped
    what = f"{path} is not a seed GPT checkpoint"
    sidecar = seed_config_file(path)
    if stored is None and sidecar.is_file():
        stored, form = read_seed_config_file(sidecar), form + f" with its config in {sidecar.name}"

    if "tok_emb.weight" not in state_dict or "pos_emb.weight" not in state_dict:
        check_state_dict(state_dict, dict.fromkeys(seed_rename_table(12, False)), what)  # raises: keys are missing
    tied = seed_head_is_embedding(state_dict)
    if tied:
        state_dict = {name: tensor for name, tensor in state_dict.items() if name != "out_head.weight"}
        form += ", output head tied to the token embedding"
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
            emb_dim = fields["emb_dim"]
            raise ValueError(f"{path} stores no config and emb_dim {emb_dim} is no multiple of 64: pass --n-heads")
        fields["n_heads"] = fields["emb_dim"] // SEED_HEAD_DIM
        logger.warning(
            "%s stores no config: assuming head size %d, so n_heads = %d. Pass --n-heads if the model was trained "
            "with another number of heads (a wrong value gives a model that loads but computes garbage).",
            path,
            SEED_HEAD_DIM,
            fields["n_heads"],
        )
    config = seed_config_to_gpt2edu(fields, tied)

    table = seed_rename_table(config.n_layers, config.qkv_bias)
    model_shapes = {name: p.shape for name, p in empty_model(GPT2EduForCausalLM, config).state_dict().items()}
    buffers = tuple(f"trf_blocks.{i}.{name}" for i in range(config.n_layers) for name in SEED_BUFFER_KEYS)
    expected = {seed: model_shapes[ours] for seed, ours in table.items()}
    check_state_dict(state_dict, expected, what, optional=("out_head.weight",) if tied else (), ignored=buffers)
    state_dict = seed_to_gpt2edu_state_dict(state_dict, config.n_layers, config.qkv_bias)
    return Source(f"seed checkpoint {path.name} ({form})", config, state_dict)


def seed_config_file(path: Path) -> Path:
    """Where the seed's config fields are kept beside a bare state dict: gpt2_model.pth -> gpt2_model.config.json."""
    return path.with_name(path.stem + ".config.json")


def read_seed_config_file(path: Path) -> dict:
    """The seed config fields stored in a JSON file (the dict the book passes to `GPTModel(cfg)`)."""
    try:
        fields = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read the seed config {path}: {error}") from error
    if not isinstance(fields, dict) or not set(fields) <= set(SEED_CONFIG_FIELDS):
        raise ValueError(f"{path} is not a seed config: expected a JSON object with {', '.join(SEED_CONFIG_FIELDS)}")
    return fields


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
        if not isinstance(state_dict, dict) or not all(isinstance(t, torch.Tensor) for t in state_dict.values()):
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


def read_hf_folder(folder: Path) -> Source:
    """Read a save_pretrained folder of a gpt2edu or a transformers GPT-2 model."""
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ValueError(f"{folder} is a folder without config.json: pass a model folder or a seed .pth file")
    try:
        model_type = json.loads(config_file.read_text()).get("model_type")
    except (json.JSONDecodeError, AttributeError) as error:
        raise ValueError(f"{config_file} is not a JSON object: {error}") from error
    if model_type not in ("gpt2edu", "gpt2"):
        raise ValueError(f"{folder} holds a {model_type!r} model; this converter reads gpt2edu and gpt2 models")
    state_dict = load_weights_from_folder(folder)
    what = f"{folder} does not hold the {model_type} model its config describes"
    if model_type == "gpt2edu":
        config = model_config = GPT2EduConfig.from_pretrained(folder)
        model_class, head, embedding = GPT2EduForCausalLM, "out_head.weight", "model.tok_emb.weight"
    else:
        model_config = GPT2Config.from_pretrained(folder)
        config = gpt2_config_to_gpt2edu(model_config)
        model_class, head, embedding = GPT2LMHeadModel, "lm_head.weight", "transformer.wte.weight"
        state_dict = normalize_gpt2_keys(state_dict)
    blocks = {int(match.group(1)) for key in state_dict if (match := re.search(r"(?:trf_blocks|\.h)\.(\d+)\.", key))}
    if config.n_layers != len(blocks):  # before building: a config of 200,000 layers would take minutes to build
        raise ValueError(f"{what}: config.json says {config.n_layers} layers, its weights hold {len(blocks)} blocks")
    shapes = {name: p.shape for name, p in empty_model(model_class, model_config).state_dict().items()}
    check_state_dict(state_dict, shapes, what, optional=(head,) if config.tie_word_embeddings else ())
    state_dict.setdefault(head, state_dict[embedding])  # save_pretrained writes a tied head once, as the embedding
    if model_type == "gpt2":
        state_dict = gpt2_to_gpt2edu_state_dict(state_dict, config.n_layers)
    return Source(f"{model_type} folder {folder.name}", config, state_dict)


# What a Hub download fetches: the config and the weights, nothing else (no TF, Flax or ONNX copies).
HUB_FILES = ["config.json", "model.safetensors", "model.safetensors.index.json", "model-*.safetensors"]


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
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        message = f"{repo_id} is no local file or folder, and it could not be fetched from the Hub: {reason}"
        raise ValueError(message) from error
    return folder


def looks_like_repo_id(src: str) -> bool:
    """Whether SRC is shaped like a Hub model id ('name' or 'owner/name'), rather than a file name."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if src.count("/") > 1 or src.endswith((".pth", ".pt", ".bin", ".safetensors")):
        return False
    try:
        validate_repo_id(src)
    except HFValidationError:
        return False
    return True


def read_source(src: str | Path, n_heads: int | None = None, revision: str | None = None) -> Source:
    """Detect what SRC is (a model folder, a seed checkpoint file or a Hub id) and read it into gpt2edu's layout."""
    path = Path(src)
    if revision is not None and path.exists():
        raise ValueError(f"--revision is for Hub model ids; {src} is a local path")
    if not path.exists() and looks_like_repo_id(str(src)):
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
        if not torch.isfinite(tensor).all():
            bad = int((~torch.isfinite(tensor)).sum())
            raise ValueError(
                f"{source.description}: tensor {name} holds {bad} NaN or infinite value(s) of {tensor.numel()}; the "
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


# --- building and writing ------------------------------------------------------------------------------------------


def build_model(source: Source, to: str, dtype: torch.dtype | None = None) -> PreTrainedModel:
    """A gpt2edu (to="gpt2edu") or GPT2LMHeadModel (to="gpt2") whose parameters are the source's tensors.

    The model is built on the meta device and the tensors are assigned to it, not copied into it, so a memory-mapped
    checkpoint stays in its file until it is written out.
    """
    state_dict = own_memory(source.state_dict)
    if dtype is not None:
        check_dtype_range(state_dict, dtype)
        state_dict = {name: tensor.to(dtype) for name, tensor in state_dict.items()}
    config, model_class = source.config, GPT2EduForCausalLM
    if to == "gpt2":
        state_dict = gpt2edu_to_gpt2_state_dict(state_dict, config.n_layers)
        config, model_class = gpt2edu_config_to_gpt2(config), GPT2LMHeadModel
    model = empty_model(model_class, config)
    model.load_state_dict(state_dict, strict=True, assign=True)
    model.tie_weights()  # HF: assign gave the head and the embedding separate Parameters; tie them again
    return model.eval()


def own_memory(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Give every tensor contiguous memory of its own, as safetensors needs; the same tensor twice (a tie) stays one.

    Checkpoints may hold views: the book's safetensors loader leaves W_query, W_key and W_value as transposed chunks of
    one fused matrix. Such tensors are copied; a tensor that is already alone in its memory is kept as it is.
    """
    owners: dict[int, torch.Tensor] = {}
    out = {}
    for name, tensor in state_dict.items():
        storage = tensor.untyped_storage()
        alone = (
            tensor.is_contiguous()
            and tensor.storage_offset() == 0
            and storage.nbytes() == tensor.numel() * tensor.element_size()
        )
        owner = owners.setdefault(storage.data_ptr(), tensor)
        out[name] = tensor if alone and owner is tensor else tensor.clone(memory_format=torch.contiguous_format)
    return out


@contextlib.contextmanager
def atomic_output_dir(out_dir: str | os.PathLike, force: bool = False):
    """Yield an empty temporary folder beside `out_dir`; rename it to `out_dir` only if the block succeeds.

    On any failure the temporary folder is removed and `out_dir` is left as it was, so no half-written folder is ever
    seen at `out_dir`. With `force`, an existing `out_dir` is replaced (only once the new one is complete).

    Raises:
        ValueError: If `out_dir` is a file, or a non-empty folder and `force` is not set.
    """
    out_dir = Path(out_dir)
    clean_stale_siblings(out_dir)
    check_output_dir(out_dir, force)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = new_sibling_dir(out_dir, "partial")  # same file system as out_dir, so the final rename is atomic
    try:
        yield tmp
        ordinary_permissions(tmp)
        if out_dir.exists():
            old = new_sibling_dir(out_dir, "old")
            out_dir.rename(old / out_dir.name)  # set the old folder aside: it comes back if the rename below fails
            try:
                tmp.rename(out_dir)
            except OSError:
                (old / out_dir.name).rename(out_dir)
                raise
            shutil.rmtree(old)
        else:
            tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already after a successful rename


def ordinary_permissions(folder: Path) -> None:
    """Give the files in `folder` the permissions the user's umask gives new files (safetensors writes 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    for file in folder.iterdir():
        if file.is_file():
            file.chmod(0o666 & ~umask)


def clean_stale_siblings(path: Path) -> None:
    """Clear what a run killed while writing `path` left beside it (one conversion to a given OUT at a time).

    `.NAME.partial-*` folders are half-written output: removed. A `.NAME.old-*` folder holds the previous NAME set
    aside for a replacement: if NAME is gone (killed between the two renames) it is moved back, otherwise removed.
    """
    if not path.parent.is_dir():
        return
    for stale in path.parent.glob(f".{glob.escape(path.name)}.partial-*"):
        shutil.rmtree(stale, ignore_errors=True)
    for old in path.parent.glob(f".{glob.escape(path.name)}.old-*"):
        if not path.exists() and (old / path.name).exists():
            (old / path.name).rename(path)
        shutil.rmtree(old, ignore_errors=True)


def new_sibling_dir(path: Path, tag: str) -> Path:
    """Create an empty hidden folder beside `path` (".NAME.TAG-xxxxxxxx"), with the usual permissions."""
    while True:
        candidate = path.with_name(f".{path.name}.{tag}-{secrets.token_hex(4)}")
        with contextlib.suppress(FileExistsError):
            candidate.mkdir()  # unlike tempfile.mkdtemp's 0700, honours the umask like any folder the user makes
            return candidate


def check_output_dir(out_dir: Path, force: bool) -> None:
    """Raise ValueError if writing to `out_dir` would destroy something the user did not ask to replace."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir} exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise ValueError(f"{out_dir} exists and is not empty; pass --force to replace it")


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two tensors have the same dtype, shape and bytes (unlike ==, this holds for NaNs too)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    # speed: compare as integers of the element's width (int32 for float32): a quarter of the comparisons of bytes.
    as_int = {2: torch.int16, 4: torch.int32, 8: torch.int64}.get(a.element_size(), torch.uint8)
    return torch.equal(a.reshape(-1).view(as_int), b.reshape(-1).view(as_int))


def compare_parameters(loaded: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], where: str) -> int:
    """Check that `loaded` holds exactly `expected`'s tensors, bit for bit; return how many were compared.

    Raises:
        RuntimeError: Naming the first tensor that is missing, extra or different.
    """
    missing, extra = sorted(expected.keys() - loaded.keys()), sorted(loaded.keys() - expected.keys())
    if missing or extra:
        raise RuntimeError(f"verification failed: {where} loads with {describe_key_mismatch(missing, extra)}")
    for name, tensor in expected.items():
        if not same_bits(loaded[name], tensor):
            raise RuntimeError(f"verification failed: {name} as loaded from {where} differs from its source")
    return len(expected)


def verify_loaded_model(folder: Path, model: PreTrainedModel) -> int:
    """Load `folder` as a user will (`AutoModelForCausalLM.from_pretrained`) and compare every parameter with `model`.

    Tied parameters are compared under each of their names, so a head that would load untied (and be freshly
    initialised) fails here. Returns the number of tensors compared.
    """
    with quiet_transformers():
        loaded, info = AutoModelForCausalLM.from_pretrained(folder, dtype=model.dtype, output_loading_info=True)
    problems = {kind: keys for kind, keys in info.items() if keys and kind != "error_msgs"}
    if problems:
        kind, keys = next(iter(problems.items()))
        raise RuntimeError(
            f"verification failed: loading {folder} reports {kind.replace('_', ' ')} {sorted(keys)[:4]}"
        )
    expected = dict(model.state_dict())
    count = compare_parameters(dict(loaded.state_dict()), expected, str(folder))
    del loaded
    return count


@contextlib.contextmanager
def quiet_transformers():
    """Silence transformers' load report: verification turns what it would say into an error of its own."""
    level = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers_logging.set_verbosity(level)


def save_model_folder(
    model: PreTrainedModel,
    out_dir: str | os.PathLike,
    tokenizer=None,
    model_card: str | None = None,
    force: bool = False,
) -> int:
    """Write a complete, verified model folder, atomically.

    The folder gets config.json, model.safetensors, generation_config.json, the tokenizer files, a README.md model
    card, and for gpt2edu models the two code files (config.json's auto_map points at them).

    Args:
        model: The model to save.
        out_dir: The folder to create.
        tokenizer: The tokenizer to save with it; GPT-2's when None.
        model_card: Text of README.md; none is written when None.
        force: Replace an existing non-empty `out_dir`.

    Returns:
        The number of tensors of the model loaded back from the folder, each verified to equal the source's.
    """
    with atomic_output_dir(out_dir, force) as tmp:
        model.save_pretrained(tmp)
        if tokenizer is None:
            save_gpt2_tokenizer(tmp)
        else:
            tokenizer.save_pretrained(tmp)
        if model_card is not None:
            (tmp / "README.md").write_text(model_card)
        return verify_loaded_model(tmp, model)


def save_seed_file(model: GPT2EduForCausalLM, out_file: str | os.PathLike, force: bool = False) -> int:
    """Write the seed's checkpoint form of `model`, verified, atomically: OUT.pth and OUT.config.json beside it.

    OUT.pth is a bare state dict with the seed's names, `att.mask` buffers included, so the book's
    `GPTModel(cfg).load_state_dict(torch.load("OUT.pth"), strict=True)` loads it; OUT.config.json holds the seed's
    config fields, the `cfg` dict to build that `GPTModel` with (and what this converter reads back).

    Returns:
        The number of tensors in OUT.pth, each verified to equal what was meant to be written.
    """
    out_file = Path(out_file)
    clean_stale_siblings(out_file)
    check_output_file(out_file, force)
    state_dict = gpt2edu_to_seed_state_dict(dict(model.state_dict()), model.config)
    fields = {name: getattr(model.config, name) for name in SEED_CONFIG_FIELDS}
    tmp = new_sibling_dir(out_file, "partial")
    try:
        written, config_file = tmp / out_file.name, seed_config_file(tmp / out_file.name)
        torch.save(state_dict, written)
        config_file.write_text(json.dumps(fields, indent=2) + "\n")
        # What the book's load_state_dict(strict=True) gets: the file's tensors, masks included, bit for bit ...
        count = compare_parameters(load_checkpoint_file(written), state_dict, str(out_file))
        # ... and what they compute: read back as a seed checkpoint, they are the model's parameters.
        source = read_seed_checkpoint(written)
        compare_parameters(source.state_dict, dict(model.state_dict()), str(out_file))
        ordinary_permissions(tmp)
        os.replace(config_file, seed_config_file(out_file))
        os.replace(written, out_file)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return count


def check_output_file(out_file: Path, force: bool) -> None:
    """Raise ValueError if writing the seed checkpoint `out_file` would destroy something not asked to replace."""
    for path in (out_file, seed_config_file(out_file)):
        if path.is_dir():
            raise ValueError(f"{path} is a folder; a seed checkpoint is written as a .pth file")
        if path.exists() and not force:
            raise ValueError(f"{path} exists; pass --force to replace it")


def describe_model(config: GPT2EduConfig, n_params: int, dtype: torch.dtype) -> str:
    """'124.4M parameters: 12 layers, emb_dim 768, ...' in one line."""
    size = f"{n_params / 1e6:.1f}M" if n_params >= 1e6 else f"{n_params:,}"
    return (
        f"{size} parameters: {config.n_layers} layers, emb_dim {config.emb_dim}, {config.n_heads} "
        f"heads, context {config.context_length}, vocabulary {config.vocab_size}, "
        f"{'tied' if config.tie_word_embeddings else 'untied'} output head, {str(dtype).removeprefix('torch.')}"
    )


def model_card(source: Source, model: PreTrainedModel, to: str, repo_id: str) -> str:
    """The README.md of a converted folder: size, provenance and how to load it."""
    summary = describe_model(source.config, sum(p.numel() for p in model.parameters()), model.dtype)
    remote = ", trust_remote_code=True" if to == "gpt2edu" else ""
    how = (
        "gpt2edu's own code (`modeling_gpt2edu.py`, `configuration_gpt2edu.py`) is in this repository, so "
        "`trust_remote_code=True` loads it without installing anything."
        if to == "gpt2edu"
        else "It is a plain transformers `GPT2LMHeadModel`: any tool that serves GPT-2 serves it, no custom code."
    )
    return f"""---
library_name: transformers
pipeline_tag: text-generation
tags:
- gpt2edu
- gpt2
---

# {repo_id}

A GPT-2 language model, {summary}.

## Provenance

Converted by gpt2edu's `convert_checkpoint.py` from the {source.description}, to the {to} layout. After writing,
every tensor was read back and checked to equal its source bit for bit.

## Use

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

model = AutoModelForCausalLM.from_pretrained("{repo_id}"{remote})
tokenizer = AutoTokenizer.from_pretrained("{repo_id}")
```

{how} The tokenizer is GPT-2's byte-level BPE, with exactly tiktoken's `gpt2` token ids.
"""


def push_to_hub(folder: Path, repo_id: str, private: bool = False) -> str:
    """Upload every file of `folder` to the Hub model repo `repo_id` in one commit; return the repo's URL."""
    api = HfApi()
    repo_url = api.create_repo(repo_id, private=private, exist_ok=True)
    operations = [
        CommitOperationAdd(path_in_repo=path.name, path_or_fileobj=str(path))
        for path in sorted(folder.iterdir())
        if path.is_file()
    ]
    api.create_commit(repo_id=repo_id, operations=operations, commit_message="Upload model from convert_checkpoint.py")
    return str(repo_url)


# --- command line --------------------------------------------------------------------------------------------------

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
SEED_SUFFIXES = (".pth", ".pt")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="convert_checkpoint.py",
        description="Convert a seed .pth checkpoint or a gpt2edu / GPT-2 model folder into a gpt2edu or GPT-2 folder.",
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
        "checkpoint",
    )
    parser.add_argument(
        "--to",
        choices=("gpt2edu", "gpt2", "seed"),
        default=None,
        help="layout to write (default: seed for an OUT ending in .pth/.pt, else gpt2edu)",
    )
    parser.add_argument("--revision", default=None, help="branch, tag or commit, when SRC is a Hub model id")
    parser.add_argument("--n-heads", type=int, metavar="N", help="attention heads, for a seed file with no config")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default=None, help="store weights as (default: as read)")
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
    """The layout to write: --to, or from OUT's name (.pth/.pt: the seed's); ValueError where the two disagree."""
    seed_file = args.out_dir.endswith(SEED_SUFFIXES)
    if seed_file and args.push_to_hub:
        raise ValueError("--push-to-hub uploads model folders; a seed checkpoint (--to seed) is a single .pth file")
    if args.to is None:
        return "seed" if seed_file else "gpt2edu"
    if args.to == "seed" and not seed_file:
        raise ValueError(f"--to seed writes a .pth file, but OUT is {args.out_dir!r}: name it e.g. {args.out_dir}.pth")
    if args.to != "seed" and seed_file:
        raise ValueError(
            f"OUT {args.out_dir!r} ends in .pth/.pt, which names a seed checkpoint: use --to seed, or name the "
            f"{args.to} folder without the extension"
        )
    return args.to


def convert(args: argparse.Namespace) -> int:
    """Read, build, write, verify and (optionally) push; return the number of verified tensors."""
    args.to = choose_layout(args)
    out_dir = Path(args.out_dir)
    if args.to == "seed":
        check_output_file(out_dir, args.force)  # fail before the slow part
    else:
        check_output_dir(out_dir, args.force)
    source = read_source(args.src, args.n_heads, args.revision)
    check_source_tensors(source)
    print(f"Read {source.description}")
    model = build_model(source, "gpt2edu" if args.to == "seed" else args.to, DTYPES.get(args.dtype))
    print(f"Model: {describe_model(source.config, sum(p.numel() for p in model.parameters()), model.dtype)}")
    if args.to == "seed":
        verified = save_seed_file(model, out_dir, args.force)
        print(f"Wrote seed checkpoint {out_dir} and its config {seed_config_file(out_dir)}")
        print(f"verified: {verified} tensors in {out_dir} read back equal to their source")
        return verified
    card = model_card(source, model, args.to, args.push_to_hub or out_dir.name)
    verified = save_model_folder(model, out_dir, model_card=card, force=args.force)
    print(f"Wrote {args.to} folder {out_dir}: {', '.join(sorted(p.name for p in out_dir.iterdir()))}")
    print(f"verified: the model loaded from {out_dir} has all {verified} tensors of its source, bit for bit")
    if args.push_to_hub:
        try:
            url = push_to_hub(out_dir, args.push_to_hub, args.private)
        except Exception as error:  # network edge: HTTP, connection and auth failures come in many types
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise OSError(f"push to {args.push_to_hub} failed ({reason}); {out_dir} is complete") from error
        print(f"Pushed to {url}")
    return verified


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    transformers_logging.disable_progress_bar()
    try:
        convert(args)
    except KeyboardInterrupt:  # the temporary output has been removed on the way out (atomic_output_dir)
        print(f"convert_checkpoint.py: interrupted; nothing was written to {args.out_dir}", file=sys.stderr)
        return 130
    except OSError as error:
        if error.errno == errno.ENOSPC:
            print(
                f"convert_checkpoint.py: error: no space left on the device while writing {args.out_dir}; nothing "
                "was written (an earlier folder there is untouched): free some space and run again",
                file=sys.stderr,
            )
            return 2
        print(f"convert_checkpoint.py: error: {one_line(error)}", file=sys.stderr)
        return 2
    except (ValueError, RuntimeError) as error:
        print(f"convert_checkpoint.py: error: {one_line(error)}", file=sys.stderr)
        return 2
    return 0


def one_line(error: Exception, limit: int = 400) -> str:
    """An error's message on one line, cut at `limit` characters (library messages can run to thousands)."""
    message = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    return message if len(message) <= limit else message[: limit - 1] + "…"


if __name__ == "__main__":
    sys.exit(main())
