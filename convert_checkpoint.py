"""Convert between the seed's .pth checkpoints, transformers' own GPT-2 folders and gpt2edu folders; write GGUF.

    python convert_checkpoint.py gpt2_model.pth gpt2edu-124m                # seed checkpoint -> gpt2edu folder
    python convert_checkpoint.py gpt2edu-124m gpt2-124m --to gpt2           # gpt2edu folder -> plain GPT-2 folder
    python convert_checkpoint.py gpt2-folder gpt2edu-openai                 # transformers GPT-2 -> gpt2edu
    python convert_checkpoint.py openai-community/gpt2 gpt2edu-openai       # a Hub model id -> gpt2edu
    python convert_checkpoint.py gpt2edu-124m back.pth                      # gpt2edu folder -> seed checkpoint
    python convert_checkpoint.py gpt2_model.pth model.gguf --dtype float16  # any source -> GGUF, for llama.cpp
    python convert_checkpoint.py gpt2_model.pth out --push-to-hub you/gpt2edu-124m

Every conversion goes through gpt2edu's layout: source -> gpt2edu -> target. The file reads in that order: the name
tables (one table per part of the model: seed name -> gpt2edu name -> GPT-2 name, read backwards on the way back),
the pure maps from state dict to state dict and config to config, `read_source`, `build_model`, then `convert()`.
What keeps it safe sits beside it: gpt2edu/convert_sources.py reads untrusted checkpoints (weights-only unpickling)
and checks them; gpt2edu/convert_outputs.py writes into a staging folder, loads the result back as a user will,
compares every parameter with the source, and only then moves it into place. gpt2edu/gguf_export.py writes a GGUF
file (llama.cpp's gpt2 architecture) from gpt2edu's layout, with its own name table.
"""

import argparse
import sys
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedModel

from configuration_gpt2edu import GPT2EduConfig
from gpt2edu import convert_outputs as outputs
from gpt2edu import convert_sources as sources
from gpt2edu import gguf_export
from gpt2edu.cli import EXIT_INTERRUPTED, EXIT_OK, OneLineErrorParser, UsageError, quiet_logs, report
from gpt2edu.convert_sources import Source
from gpt2edu.files import atomic_write
from gpt2edu.loading import looks_like_hub_id
from modeling_gpt2edu import GPT2EduForCausalLM

PROG = "convert_checkpoint.py"
StateDict = dict[str, torch.Tensor]

# --- the name tables: seed <-> gpt2edu <-> transformers' GPT-2 ----------------------------------------------------

# The model's top: seed name -> (gpt2edu name, GPT-2 name). gpt2edu keeps the seed's names; its body sits under
# `model.`, as in every transformers *ForCausalLM, while the output head stays on top, as `lm_head` (the name
# transformers and serving engines look for; gpt2edu's files keep the seed's `out_head.weight`: see read_hf_folder).
TOP_NAMES = {
    "tok_emb.weight": ("model.tok_emb.weight", "transformer.wte.weight"),
    "pos_emb.weight": ("model.pos_emb.weight", "transformer.wpe.weight"),
    "final_norm.scale": ("model.final_norm.scale", "transformer.ln_f.weight"),
    "final_norm.shift": ("model.final_norm.shift", "transformer.ln_f.bias"),
    "out_head.weight": ("lm_head.weight", "lm_head.weight"),
}
# Each block: the name under "trf_blocks.{i}." (seed) and "model.trf_blocks.{i}." (gpt2edu) -> the name under
# "transformer.h.{i}." (GPT-2). Every GPT-2 weight in a block is a Conv1D, stored (in, out): the transpose of
# nn.Linear's (out, in). GPT-2 fuses query, key and value side by side in one c_attn.
BLOCK_NAMES = {
    "att.W_query.weight": "attn.c_attn.weight",
    "att.W_key.weight": "attn.c_attn.weight",
    "att.W_value.weight": "attn.c_attn.weight",
    "att.out_proj.weight": "attn.c_proj.weight",
    "att.out_proj.bias": "attn.c_proj.bias",
    "ff.layers.0.weight": "mlp.c_fc.weight",
    "ff.layers.0.bias": "mlp.c_fc.bias",
    "ff.layers.2.weight": "mlp.c_proj.weight",
    "ff.layers.2.bias": "mlp.c_proj.bias",
    "norm1.scale": "ln_1.weight",
    "norm1.shift": "ln_1.bias",
    "norm2.scale": "ln_2.weight",
    "norm2.shift": "ln_2.bias",
    "att.W_query.bias": "attn.c_attn.bias",  # the qkv biases: the seed has them only with qkv_bias=True
    "att.W_key.bias": "attn.c_attn.bias",
    "att.W_value.bias": "attn.c_attn.bias",
}
QKV = ("W_query", "W_key", "W_value")  # their order in GPT-2's fused c_attn
QKV_BIASES = tuple(f"att.{name}.bias" for name in QKV)
FUSED_QKV = ("attn.c_attn.weight", "attn.c_attn.bias")
SEED_BUFFER_KEYS = ("att.mask",)  # the causal mask, a buffer the seed saves with its weights: not carried over
# Causal-mask buffers that old transformers versions saved in pytorch_model.bin files.
GPT2_BUFFER_SUFFIXES = (".attn.bias", ".attn.masked_bias")
# Prefixes that wrappers put in front of every key: torch.compile's and DistributedDataParallel's.
WRAPPER_PREFIXES = ("_orig_mod.", "module.")
SEED_CONFIG_FIELDS = ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers", "drop_rate", "qkv_bias")


def seed_rename_table(n_layers: int, qkv_bias: bool) -> dict[str, str]:
    """Seed name -> gpt2edu name, for every weight of a seed model with this many blocks."""
    table = {seed: ours for seed, (ours, _) in TOP_NAMES.items()}
    names = [name for name in BLOCK_NAMES if qkv_bias or name not in QKV_BIASES]
    for i in range(n_layers):
        table.update({f"trf_blocks.{i}.{name}": f"model.trf_blocks.{i}.{name}" for name in names})
    return table


def gpt2_rename_table(n_layers: int) -> dict[str, str]:
    """gpt2edu name -> GPT-2 name, for every weight of a GPT-2 with this many blocks (q, k and v share c_attn)."""
    table = dict(TOP_NAMES.values())
    for i in range(n_layers):
        table.update(
            {f"model.trf_blocks.{i}.{ours}": f"transformer.h.{i}.{gpt2}" for ours, gpt2 in BLOCK_NAMES.items()}
        )
    return table


# --- pure maps: state dicts ----------------------------------------------------------------------------------------


def seed_to_gpt2edu_state_dict(state_dict: StateDict, n_layers: int, qkv_bias: bool) -> StateDict:
    """Rename a seed state dict (prefixes already stripped) into gpt2edu's layout, dropping the causal-mask buffers.

    The tensors are not copied: the result holds the very same tensors under their new names. A state dict without
    `out_head.weight` (a tied head) gets the token embedding as its head.
    """
    out = {
        ours: state_dict[seed] for seed, ours in seed_rename_table(n_layers, qkv_bias).items() if seed in state_dict
    }
    out.setdefault("lm_head.weight", out["model.tok_emb.weight"])
    return out


def gpt2edu_to_seed_state_dict(state_dict: StateDict, config: GPT2EduConfig) -> StateDict:
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


def gpt2_to_gpt2edu_state_dict(state_dict: StateDict, n_layers: int) -> StateDict:
    """Rename and reshape a transformers GPT2LMHeadModel state dict into gpt2edu's layout."""
    out = {}
    for ours, gpt2 in gpt2_rename_table(n_layers).items():
        if gpt2 == "lm_head.weight" and gpt2 not in state_dict:
            gpt2 = "transformer.wte.weight"  # tied checkpoints may omit lm_head
        tensor = state_dict[gpt2]
        if gpt2.startswith("transformer.h.") and tensor.dim() == 2:
            tensor = tensor.t()  # Conv1D (in, out) -> nn.Linear (out, in)
        if gpt2.endswith(FUSED_QKV):  # query, key or value: its third of c_attn, (3 * emb_dim, ...) -> (emb_dim, ...)
            third = tensor.chunk(3)[QKV.index(ours.split(".")[-2])]
            # In storage of its own: safetensors refuses to write views that share memory.
            tensor = third.clone(memory_format=torch.contiguous_format)
        out[ours] = tensor.contiguous()
    return out


def gpt2edu_to_gpt2_state_dict(state_dict: StateDict, n_layers: int) -> StateDict:
    """Rename and reshape a gpt2edu state dict into transformers GPT2LMHeadModel's layout (zero qkv bias if absent)."""
    out, thirds = {}, {}
    for ours, gpt2 in gpt2_rename_table(n_layers).items():
        if ours not in state_dict and ours.endswith(QKV_BIASES):
            # The seed's attention has no qkv bias; GPT-2's always has one, so a zero bias computes the same thing.
            tensor = torch.zeros_like(state_dict[ours.replace(".bias", ".weight")][:, 0])
        else:
            tensor = state_dict[ours]
        if gpt2.startswith("transformer.h.") and tensor.dim() == 2:
            tensor = tensor.t()  # nn.Linear (out, in) -> Conv1D (in, out)
        if gpt2.endswith(FUSED_QKV):
            thirds.setdefault(gpt2, []).append(tensor)  # in QKV order, as the table lists them
        else:
            out[gpt2] = tensor.contiguous()
    # c_attn: query, key and value side by side, weight (emb_dim, 3 * emb_dim) and bias (3 * emb_dim).
    out.update({gpt2: torch.cat(parts, dim=-1) for gpt2, parts in thirds.items()})
    return out


def strip_wrapper_prefixes(state_dict: StateDict) -> StateDict:
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


def normalize_gpt2_keys(state_dict: StateDict) -> StateDict:
    """Give a GPT-2 state dict GPT2LMHeadModel's key names: drop old mask buffers, add `transformer.` where missing.

    OpenAI's weights on the Hub were saved from the bare GPT2Model, whose keys lack the `transformer.` prefix.
    """
    out = {}
    for key, tensor in state_dict.items():
        if key.endswith(GPT2_BUFFER_SUFFIXES):
            continue
        out[key if key.startswith(("transformer.", "lm_head.")) else "transformer." + key] = tensor
    return out


def seed_head_is_embedding(state_dict: StateDict) -> bool:
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
    return same_memory or outputs.same_bits(head, embedding)


# --- pure maps: configs --------------------------------------------------------------------------------------------


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
        n_ctx=config.context_length,  # n_positions' old name, in OpenAI's config.json: llama.cpp's converter reads it
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


# --- reading a source into gpt2edu's layout ------------------------------------------------------------------------


def read_seed_checkpoint(path: Path, n_heads: int | None = None) -> Source:
    """Read a seed .pth file (a bare state dict, or `save_checkpoint`'s dict with a config) into gpt2edu's layout.

    Args:
        path: The file. Its config is the one stored in it, else NAME.config.json beside it, else --n-heads.
        n_heads: Number of attention heads, for files that store no config (shapes do not reveal it).

    Raises:
        ValueError: For anything that is not a seed checkpoint, or a --n-heads that contradicts the stored config.
    """
    as_stored, stored, form = sources.load_seed_file(path)
    state_dict = strip_wrapper_prefixes(as_stored)
    prefixes = sorted({key.removesuffix(name) for key, name in zip(as_stored, state_dict, strict=True) if key != name})
    if prefixes:
        form += ", keys prefixed " + " and ".join(prefixes)
    sidecar = sources.seed_config_file(path)
    if stored is None and sidecar.is_file():
        stored = sources.read_seed_config_file(sidecar, SEED_CONFIG_FIELDS)
        form += f" with its config in {sidecar.name}"
    what = f"{path} is not a seed GPT checkpoint"
    if "tok_emb.weight" not in state_dict or "pos_emb.weight" not in state_dict:  # raises: keys are missing
        sources.check_state_dict(state_dict, dict.fromkeys(seed_rename_table(12, False)), what)
    tied = seed_head_is_embedding(state_dict)
    if tied:
        state_dict = {name: tensor for name, tensor in state_dict.items() if name != "out_head.weight"}
        form += ", output head tied to the token embedding"
    config = seed_config_to_gpt2edu(sources.seed_config_fields(path, state_dict, stored, n_heads), tied)

    shapes = sources.model_shapes(GPT2EduForCausalLM, config)
    expected = {seed: shapes[ours] for seed, ours in seed_rename_table(config.n_layers, config.qkv_bias).items()}
    buffers = tuple(f"trf_blocks.{i}.{name}" for i in range(config.n_layers) for name in SEED_BUFFER_KEYS)
    optional = ("out_head.weight",) if tied else ()
    sources.check_state_dict(state_dict, expected, what, optional=optional, ignored=buffers)
    state_dict = seed_to_gpt2edu_state_dict(state_dict, config.n_layers, config.qkv_bias)
    return Source(f"seed checkpoint {path.name} ({form})", config, state_dict)


def read_hf_folder(folder: Path) -> Source:
    """Read a save_pretrained folder of a gpt2edu or a transformers GPT-2 model into gpt2edu's layout."""
    model_type, state_dict = sources.load_hf_folder(folder)
    if model_type == "gpt2edu":
        config = model_config = GPT2EduConfig.from_pretrained(folder)
        model_class, head, embedding = GPT2EduForCausalLM, "lm_head.weight", "model.tok_emb.weight"
        # HF: the file names the head out_head.weight (the seed's name), the model lm_head, as from_pretrained maps it
        state_dict = {(head if name == "out_head.weight" else name): tensor for name, tensor in state_dict.items()}
    else:
        model_config = GPT2Config.from_pretrained(folder)
        config = gpt2_config_to_gpt2edu(model_config)
        model_class, head, embedding = GPT2LMHeadModel, "lm_head.weight", "transformer.wte.weight"
        state_dict = normalize_gpt2_keys(state_dict)
    what = f"{folder} does not hold the {model_type} model its config describes"
    sources.check_block_count(state_dict, config.n_layers, what)
    optional = (head,) if config.tie_word_embeddings else ()
    sources.check_state_dict(state_dict, sources.model_shapes(model_class, model_config), what, optional=optional)
    state_dict.setdefault(head, state_dict[embedding])  # save_pretrained writes a tied head once, as the embedding
    if model_type == "gpt2":
        state_dict = gpt2_to_gpt2edu_state_dict(state_dict, config.n_layers)
    return Source(f"{model_type} folder {folder.name}", config, state_dict)


def read_source(src: str | Path, n_heads: int | None = None, revision: str | None = None) -> Source:
    """Detect what SRC is (a model folder, a seed checkpoint file or a Hub id) and read it into gpt2edu's layout."""
    path = Path(src)
    if revision is not None and path.exists():
        raise ValueError(f"--revision is for Hub model ids; {src} is a local path")
    if not path.exists() and looks_like_hub_id(str(src)):
        if n_heads is not None:
            raise ValueError(f"--n-heads is for seed checkpoints without a config; {src} is a Hub model id")
        source = read_hf_folder(sources.download_from_hub(str(src), revision))
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


# --- building and writing ------------------------------------------------------------------------------------------


def build_model(source: Source, to: str, dtype: torch.dtype | None = None) -> PreTrainedModel:
    """A gpt2edu (to="gpt2edu") or GPT2LMHeadModel (to="gpt2") whose parameters are the source's tensors.

    The model is built on the meta device and the tensors are assigned to it, not copied into it, so a memory-mapped
    checkpoint stays in its file until it is written out.
    """
    state_dict = outputs.own_memory(source.state_dict)
    if dtype is not None:
        sources.check_dtype_range(state_dict, dtype)
        state_dict = {name: tensor.to(dtype) for name, tensor in state_dict.items()}
    config, model_class = source.config, GPT2EduForCausalLM
    if to == "gpt2":
        state_dict = gpt2edu_to_gpt2_state_dict(state_dict, config.n_layers)
        config, model_class = gpt2edu_config_to_gpt2(config), GPT2LMHeadModel
    model = sources.empty_model(model_class, config)
    model.load_state_dict(state_dict, strict=True, assign=True)
    model.tie_weights()  # HF: assign gave the head and the embedding separate Parameters; tie them again
    return model.eval()


def save_seed_checkpoint(model: GPT2EduForCausalLM, out_file: Path, force: bool = False) -> int:
    """Write the seed's checkpoint form of `model`, verified, atomically: OUT.pth and OUT.config.json beside it.

    OUT.pth is a bare state dict with the seed's names, `att.mask` buffers included, so the book's
    `GPTModel(cfg).load_state_dict(torch.load("OUT.pth"), strict=True)` loads it; OUT.config.json holds the seed's
    config fields, the `cfg` dict to build that `GPTModel` with (and what this converter reads back).

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
    source = read_source(args.src, args.n_heads, args.revision)
    sources.check_source_tensors(source)
    print(f"Read {source.description}")
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
    verified = outputs.save_model_folder(model, out, model_card=card, force=args.force)
    print(f"Wrote {args.to} folder {out}: {', '.join(sorted(p.name for p in out.iterdir()))}")
    print(f"verified: the model loaded from {out} has all {verified} tensors of its source, bit for bit")
    if args.push_to_hub:
        print(f"Pushed to {outputs.push_folder(out, args.push_to_hub, args.private)}")
    return verified


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
