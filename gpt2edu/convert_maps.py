"""The converter's name tables and pure maps: seed <-> gpt2edu <-> transformers' GPT-2, state dicts and configs.

This is what convert_checkpoint.py is about, kept in the library because more than the converter reads checkpoints:
the seed's API (gpt2edu/seed.py) saves and loads the seed's .pth form, and every program reads a .pth file as a model
(gpt2edu/loading.py). One table per part of the model (seed name -> gpt2edu name -> GPT-2 name) drives every direction,
read backwards on the way back; each map is a pure function from state dict to state dict, or config to config.
gpt2edu's names here are the model's: its output head is `lm_head` (its files name it `out_head.weight`, the seed's
name), a sequence classifier's head `score`.
"""

import torch
from transformers import GPT2Config

from configuration_gpt2edu import GPT2EduConfig

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
# The book's chapter-6 classifier replaces the output head by `Linear(emb_dim, num_classes)`, bias included: on gpt2edu
# it is GPT2EduForSequenceClassification's `score` (transformers' name, GPT-2's too), on the same body.
CLASSIFIER_HEAD_NAMES = {"out_head.weight": "score.weight", "out_head.bias": "score.bias"}
SEQUENCE_CLASSIFIER = "GPT2EduForSequenceClassification"
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


def seed_rename_table(n_layers: int, qkv_bias: bool, classifier: bool = False) -> dict[str, str]:
    """Seed name -> gpt2edu name, for every weight of a seed model (or the book's classifier) with this many blocks."""
    table = {seed: ours for seed, (ours, _) in TOP_NAMES.items()}
    if classifier:
        table.update(CLASSIFIER_HEAD_NAMES)  # out_head is the classifier's head
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


def seed_to_gpt2edu_state_dict(
    state_dict: StateDict, n_layers: int, qkv_bias: bool, classifier: bool = False
) -> StateDict:
    """Rename a seed state dict (prefixes already stripped) into gpt2edu's layout, dropping the causal-mask buffers.

    The tensors are not copied: the result holds the very same tensors under their new names. A language model's
    state dict without `out_head.weight` (a tied head) gets the token embedding as its head; the book's classifier's
    `out_head` becomes the sequence classifier's `score`.
    """
    table = seed_rename_table(n_layers, qkv_bias, classifier)
    out = {ours: state_dict[seed] for seed, ours in table.items() if seed in state_dict}
    if not classifier:
        out.setdefault("lm_head.weight", out["model.tok_emb.weight"])
    return out


def gpt2edu_to_seed_state_dict(state_dict: StateDict, config: GPT2EduConfig) -> StateDict:
    """gpt2edu's layout back to the seed's: its names, a head of its own, and each block's `att.mask` buffer.

    The seed's `GPTModel` registers the causal mask (1 above the diagonal) as a buffer, which its `state_dict()`
    includes and `load_state_dict(strict=True)` expects; it is stored in the weights' dtype, as `model.to(dtype)`
    leaves it. A sequence classifier's `score` goes back to the book's classifier head, `out_head`.
    """
    out = {}
    classifier = "score.weight" in state_dict
    for seed, ours in seed_rename_table(config.n_layers, config.qkv_bias, classifier).items():
        if ours == "score.bias" and ours not in state_dict:
            continue  # a classifier head without a bias (classifier_bias=False)
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


def is_sequence_classifier(config) -> bool:
    """Whether a config describes a sequence classifier (the book's chapter 6) rather than a language model."""
    return SEQUENCE_CLASSIFIER in (getattr(config, "architectures", None) or ())


def seed_classifier_config(config: GPT2EduConfig, num_labels: int, bias: bool) -> GPT2EduConfig:
    """The gpt2edu config of the book's chapter-6 classifier: its body's config with a `num_labels`-row head.

    As the book trains it: the head has a bias (when the checkpoint holds one), `<|endoftext|>` pads the inputs
    (`pad_token_id`, when the vocabulary has it), and the logits are read at the last position, whatever token sits
    there. The labels are transformers' default names, LABEL_0, LABEL_1, ... until `with_labels` names them.
    """
    values = config.to_dict() | dict(
        architectures=[SEQUENCE_CLASSIFIER],
        num_labels=num_labels,
        classifier_bias=bias,
        classifier_pooling="last_position",
        pad_token_id=config.eos_token_id,
    )
    for name in ("id2label", "label2id", "transformers_version", "model_type"):
        values.pop(name, None)  # made again from num_labels; written by save_pretrained
    return GPT2EduConfig(**values)


def with_labels(config: GPT2EduConfig, labels: list[str] | None, pooling: str | None) -> GPT2EduConfig:
    """A sequence classifier's config with its labels named (--labels) and its pooling chosen (--pooling).

    Raises:
        ValueError: If the config is no classifier's, or the labels do not name each of its outputs once.
    """
    if not is_sequence_classifier(config):
        flag = "--labels" if labels is not None else "--pooling"
        raise ValueError(f"{flag} is for a sequence classifier (the book's chapter 6); this is a language model")
    values = {}
    if labels is not None:
        if len(labels) != config.num_labels or len(set(labels)) != len(labels) or not all(labels):
            raise ValueError(
                f"--labels names {len(labels)} label(s) ({','.join(labels)}), but the classifier's head has "
                f"{config.num_labels} outputs: give {config.num_labels} different names, in the order of its rows, "
                "e.g. --labels ham,spam for the book's chapter 6"
            )
        values["id2label"] = dict(enumerate(labels))
        values["label2id"] = {label: i for i, label in enumerate(labels)}
    if pooling is not None:
        values["classifier_pooling"] = pooling
    return GPT2EduConfig(**(config.to_dict() | values))


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
