"""TransformerLens on gpt2edu: the architecture adapter that opens a gpt2edu folder, as it is, in TransformerBridge.

    import gpt2edu.transformer_lens_adapter  # registers GPT2EduForCausalLM with TransformerLens
    from transformer_lens.model_bridge import TransformerBridge

    bridge = TransformerBridge.boot_transformers("gpt2edu-out", device="cpu")
    logits, cache = bridge.run_with_cache(bridge.to_tokens("Every effort moves you", prepend_bos=False))
    cache["blocks.0.attn.hook_pattern"]  # (batch, n_heads, query, key), as inspect_model.py draws it

TransformerLens names the parts of every model the same way (`embed`, `pos_embed`, `blocks.N.ln1`, `blocks.N.attn`,
`blocks.N.ln2`, `blocks.N.mlp`, `ln_final`, `unembed`) and hooks them under those names (`blocks.0.hook_resid_pre`,
`blocks.0.attn.hook_pattern`, ...). An architecture adapter says where each part lives in one model family. This one
is written after TransformerLens' own GPT-2 adapter (`model_bridge/supported_architectures/gpt2.py`), for gpt2edu's
module names, which are the seed's. It differs from GPT-2's in three places, each a small class below the table:
- the query, key and value are three `nn.Linear` (`att.W_query`, `att.W_key`, `att.W_value`), not one fused `c_attn`
  Conv1D to split;
- the LayerNorms keep their parameters as `scale` and `shift`, where TransformerLens reads `weight` and `bias`;
- the head is `lm_head` or, in older checkouts, `out_head`: the adapter asks the model which module it is.

As for GPT-2, TransformerLens recomputes the attention from the query, key and value, so `hook_attn_scores` holds the
scores before the softmax, and an edit made in `hook_pattern` (or `hook_q`, `hook_z`, ...) changes what follows.
`enable_compatibility_mode()` folds the LayerNorms into the next weights, as for GPT-2.
"""

import importlib.metadata

import torch

try:
    from transformer_lens.factories import architecture_adapter_factory
    from transformer_lens.model_bridge.architecture_adapter import ArchitectureAdapter
    from transformer_lens.model_bridge.generalized_components import (
        BlockBridge,
        EmbeddingBridge,
        JointQKVAttentionBridge,
        LinearBridge,
        MLPBridge,
        NormalizationBridge,
        PosEmbedBridge,
        UnembeddingBridge,
    )
except ImportError as error:
    raise ImportError(
        f"gpt2edu.transformer_lens_adapter needs TransformerLens 4.3 or later ({error}); pip install transformer-lens"
    ) from error

import modeling_gpt2edu  # noqa: F401  (HF: registers gpt2edu with AutoConfig and AutoModelForCausalLM)

ARCHITECTURE = "GPT2EduForCausalLM"  # the `architectures` entry of a gpt2edu folder's config.json

# --- the name table: TransformerLens' parts -> gpt2edu's modules ---------------------------------------------------

TOP_NAMES = {
    "embed": "model.tok_emb",
    "pos_embed": "model.pos_emb",
    "blocks": "model.trf_blocks",
    "ln_final": "model.final_norm",
}
# Inside each block (`model.trf_blocks.N`), and inside its attention and MLP.
BLOCK_NAMES = {"ln1": "norm1", "attn": "att", "ln2": "norm2", "mlp": "ff"}
ATTENTION_NAMES = {"q": "W_query", "k": "W_key", "v": "W_value", "o": "out_proj"}
MLP_NAMES = {"in": "layers.0", "out": "layers.2"}  # ff.layers: Linear, GELU, Linear


class GPT2EduLayerNormBridge(NormalizationBridge):
    """A gpt2edu LayerNorm, whose `scale` and `shift` TransformerLens knows as `weight` and `bias` (`w`, `b`)."""

    def __init__(self, name: str, config):
        # The LayerNorm's own forward computes the output, so it is gpt2edu's to the bit; hook_scale and
        # hook_normalized are computed beside it.
        super().__init__(name, config, use_native_layernorm_autograd=True)

    @property
    def weight(self) -> torch.nn.Parameter:
        return self.original_component.scale

    @property
    def bias(self) -> torch.nn.Parameter:
        return self.original_component.shift

    def _apply_weight_and_bias(self, hidden_states: torch.Tensor, input_dtype: torch.dtype) -> torch.Tensor:
        """After a hook edited hook_scale or hook_normalized: scale and shift the edited values."""
        return (hidden_states * self.weight + self.bias).to(input_dtype)

    def set_processed_weights(self, weights: dict[str, torch.Tensor], verbose: bool = False) -> None:
        """Compatibility mode: the folded LayerNorm's new `weight` and `bias` go into `scale` and `shift`."""
        with torch.no_grad():
            for ours, theirs in (("scale", "weight"), ("shift", "bias")):
                if theirs in weights:
                    getattr(self.original_component, ours).copy_(weights[theirs])


class GPT2EduAttentionBridge(JointQKVAttentionBridge):
    """gpt2edu's attention, recomputed by TransformerLens from its own query, key and value projections.

    TransformerLens' bridge for GPT-2 splits the fused `c_attn` into three linears, then computes the attention with
    a hook at each step (`hook_q`, `hook_attn_scores`, `hook_pattern`, `hook_z`). gpt2edu's three linears need no
    splitting: they are handed over as they are, and the computation is the same as GPT-2's.
    """

    def __init__(self, name: str, config):
        super().__init__(
            name,
            config,
            split_qkv_matrix=lambda attention: tuple(getattr(attention, ATTENTION_NAMES[part]) for part in "qkv"),
            submodules={"o": LinearBridge(name=ATTENTION_NAMES["o"])},
        )

    def forward(self, hidden_states, attention_mask=None, cache=None, output_attentions=False, **kwargs):
        """The block calls its attention as (hidden_states, attention_mask, cache, output_attentions); TransformerLens
        reads the mask and the KV cache by name (`past_key_values`). The weights are always returned, as by gpt2edu's
        eager attention."""
        return super().forward(hidden_states, attention_mask=attention_mask, past_key_values=cache, **kwargs)

    def _apply_attn_dropout(self, attn_weights: torch.Tensor) -> torch.Tensor:
        """gpt2edu's dropout on the attention weights is `att.dropout` (a no-op in eval mode)."""
        return self.original_component.dropout(attn_weights)


class GPT2EduArchitectureAdapter(ArchitectureAdapter):
    """Where TransformerLens finds each part of a GPT2EduForCausalLM."""

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        # What TransformerLens' weight processing and hooks need to know: GPT-2's LayerNorms, learned positions,
        # a plain MLP with GPT-2's tanh GELU, no gated MLP.
        self.cfg.normalization_type = "LN"
        self.cfg.positional_embedding_type = "standard"
        self.cfg.final_rms = False
        self.cfg.gated_mlp = False
        self.cfg.attn_only = False
        self.cfg.act_fn = "gelu_new"
        # W_Q, W_K, W_V (n_heads, d_model, d_head) and W_O (n_heads, d_head, d_model) from nn.Linear's (out, in).
        self.weight_processing_conversions = self._qkvo_weight_conversions(include_biases=True)
        self.component_mapping = {
            "embed": EmbeddingBridge(name=TOP_NAMES["embed"]),
            "pos_embed": PosEmbedBridge(name=TOP_NAMES["pos_embed"]),
            "blocks": BlockBridge(
                name=TOP_NAMES["blocks"],
                config=self.cfg,
                submodules={
                    "ln1": GPT2EduLayerNormBridge(BLOCK_NAMES["ln1"], self.cfg),
                    "attn": GPT2EduAttentionBridge(BLOCK_NAMES["attn"], self.cfg),
                    "ln2": GPT2EduLayerNormBridge(BLOCK_NAMES["ln2"], self.cfg),
                    "mlp": MLPBridge(
                        name=BLOCK_NAMES["mlp"],
                        config=self.cfg,
                        submodules={part: LinearBridge(name=name) for part, name in MLP_NAMES.items()},
                    ),
                },
            ),
            "ln_final": GPT2EduLayerNormBridge(TOP_NAMES["ln_final"], self.cfg),
            "unembed": UnembeddingBridge(name="lm_head"),  # renamed in prepare_model if the model calls it out_head
        }
        self._layer_norms: dict[str, torch.nn.Module] = {}

    def prepare_model(self, hf_model) -> None:
        """Before the bridge is built: find the head by what it is, and keep the LayerNorms for the weight folding."""
        super().prepare_model(hf_model)
        head = hf_model.get_output_embeddings()
        head_name = next(name for name, module in hf_model.named_children() if module is head)
        self.component_mapping["unembed"] = UnembeddingBridge(name=head_name)
        body = hf_model.model
        self._layer_norms = {"ln_final": body.final_norm}
        for index, block in enumerate(body.trf_blocks):
            self._layer_norms[f"blocks.{index}.ln1"] = block.norm1
            self._layer_norms[f"blocks.{index}.ln2"] = block.norm2

    def preprocess_weights(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Compatibility mode: TransformerLens' state dict keeps only parameters called `weight` and `bias`, so the
        LayerNorms' `scale` and `shift` are added under those names, for fold_ln to fold them into the next weights."""
        state_dict = super().preprocess_weights(state_dict)
        for name, layer_norm in self._layer_norms.items():
            state_dict[f"{name}.weight"] = layer_norm.scale.detach().clone()
            state_dict[f"{name}.bias"] = layer_norm.shift.detach().clone()
        return state_dict


def register() -> None:
    """Make TransformerLens pick this adapter for a GPT2EduForCausalLM (done when this module is imported).

    TransformerLens takes adapters from `register_adapter` and from the `transformer_lens.architectures` entry point,
    which this project declares in pyproject.toml: once installed, TransformerLens finds it there by itself (and
    warns if it finds the name registered already, so then it is left to do so). But TransformerLens 4.3's
    boot_transformers first checks a folder's architecture against its built-in table, `SUPPORTED_ARCHITECTURES`,
    which neither reaches, and refuses the folder with "Could not determine supported architecture from config";
    so the adapter goes into that table too, which is why this module must be imported before boot_transformers.
    """
    factory = architecture_adapter_factory.ArchitectureAdapterFactory
    declared = importlib.metadata.entry_points(group="transformer_lens.architectures", name=ARCHITECTURE)
    if not declared:  # a checkout that is not installed: no entry points
        factory.register_adapter(ARCHITECTURE, GPT2EduArchitectureAdapter)
    architecture_adapter_factory.SUPPORTED_ARCHITECTURES[ARCHITECTURE] = GPT2EduArchitectureAdapter


register()
