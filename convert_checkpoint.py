"""Convert between the seed's .pth checkpoints, transformers' own GPT-2 folders and gpt2edu folders.

The mapping between layouts is a set of pure functions from state dict to state dict, each driven by an explicit
rename table; the command line around them only loads, calls and writes.
"""

import torch
from transformers import GPT2Config

from configuration_gpt2edu import GPT2EduConfig

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


def gpt2_to_gpt2edu_state_dict(state_dict: dict[str, torch.Tensor], n_layers: int) -> dict[str, torch.Tensor]:
    """Rename and reshape a transformers GPT2LMHeadModel state dict into gpt2edu's layout."""
    out = {ours: state_dict[theirs] for ours, theirs in GPT2_TOP_RENAMES.items() if theirs in state_dict}
    out.setdefault("out_head.weight", state_dict["transformer.wte.weight"])  # tied checkpoints may omit lm_head
    for i in range(n_layers):
        src, dst = f"transformer.h.{i}.", f"model.trf_blocks.{i}."
        for ours, theirs in GPT2_BLOCK_RENAMES.items():
            tensor = state_dict[src + theirs]
            out[dst + ours] = tensor.t() if ours.endswith("weight") and tensor.dim() == 2 else tensor
        qkv_weight = state_dict[src + "attn.c_attn.weight"].t()  # (3 * emb_dim, emb_dim)
        qkv_bias = state_dict[src + "attn.c_attn.bias"]
        for name, weight, bias in zip(QKV, qkv_weight.chunk(3, dim=0), qkv_bias.chunk(3)):
            out[f"{dst}att.{name}.weight"] = weight
            out[f"{dst}att.{name}.bias"] = bias
    return {name: tensor.contiguous() for name, tensor in out.items()}


def gpt2edu_to_gpt2_state_dict(state_dict: dict[str, torch.Tensor], n_layers: int) -> dict[str, torch.Tensor]:
    """Rename and reshape a gpt2edu state dict into transformers GPT2LMHeadModel's layout (zero qkv biases if absent)."""
    out = {theirs: state_dict[ours] for ours, theirs in GPT2_TOP_RENAMES.items()}
    for i in range(n_layers):
        src, dst = f"model.trf_blocks.{i}.", f"transformer.h.{i}."
        for ours, theirs in GPT2_BLOCK_RENAMES.items():
            tensor = state_dict[src + ours]
            out[dst + theirs] = tensor.t() if ours.endswith("weight") and tensor.dim() == 2 else tensor
        weights = [state_dict[f"{src}att.{name}.weight"] for name in QKV]
        biases = [state_dict.get(f"{src}att.{name}.bias", torch.zeros_like(w[:, 0])) for name, w in zip(QKV, weights)]
        out[dst + "attn.c_attn.weight"] = torch.cat(weights, dim=0).t()  # (emb_dim, 3 * emb_dim)
        out[dst + "attn.c_attn.bias"] = torch.cat(biases)
    return {name: tensor.contiguous() for name, tensor in out.items()}
