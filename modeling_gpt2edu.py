"""GPT-2, written from scratch, as a Hugging Face model.

Read it top to bottom in the order the ideas build on each other: LayerNorm, FeedForward, MultiHeadAttention,
TransformerBlock, then the models that stack them: the body, the language model, and the task heads on the same
body (the book's chapter 6). Parameter names are the seed's (`tok_emb`, `trf_blocks`, `att.W_query`, `norm1.scale`,
...), so its checkpoints map over one to one; the output head, the seed's `out_head`, is `lm_head` here, the name
transformers and serving engines look for, and keeps `out_head` in saved checkpoints.

What the Hugging Face ecosystem adds on top of the textbook model is small and marked `# HF:` where it appears:
a key/value cache for `generate()`, attention masks for padded batches, and the `PreTrainedModel` plumbing that gives
`save_pretrained`, `from_pretrained`, the Auto classes and the Hub.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    GenerationMixin,
    PreTrainedModel,
)
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache
from transformers.conversion_mapping import WeightRenaming, register_checkpoint_conversion_mapping
from transformers.masking_utils import create_causal_mask
from transformers.modeling_layers import (
    GenericForQuestionAnswering,
    GenericForTokenClassification,
    GradientCheckpointingLayer,
)
from transformers.modeling_outputs import (
    BaseModelOutputWithPast,
    CausalLMOutputWithPast,
    SequenceClassifierOutputWithPast,
)
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import TransformersKwargs, can_return_tuple, logging
from transformers.utils.deprecation import deprecate_kwarg

# HF: transformers' remote-code loader copies this file next to configuration_gpt2edu.py and follows only relative
# imports outside try blocks; the absolute import is for running from a checkout.
try:
    from .configuration_gpt2edu import GPT2EduConfig
except ImportError:
    from configuration_gpt2edu import GPT2EduConfig

logger = logging.get_logger(__name__)


class LayerNorm(nn.Module):
    """Normalise each token's features to zero mean and unit variance, then apply a learned scale and shift."""

    def __init__(self, emb_dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(emb_dim))
        self.shift = nn.Parameter(torch.zeros(emb_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # speed: one fused kernel computes (x - mean) / sqrt(var + eps) * scale + shift, with the biased variance.
        return F.layer_norm(x, (x.shape[-1],), self.scale, self.shift, self.eps)


class FeedForward(nn.Module):
    """Position-wise MLP: expand to 4x the width, GELU, project back."""

    def __init__(self, config: GPT2EduConfig):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(config.emb_dim, 4 * config.emb_dim),
            nn.GELU(approximate="tanh"),  # GPT-2's tanh approximation of GELU
            nn.Linear(4 * config.emb_dim, config.emb_dim),
        )
        self.layers[2].writes_to_residual = True  # GPT-2 initialises it smaller: see _init_weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def eager_attention(
    module: nn.Module,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention written out step by step: scores, mask, softmax, dropout, weighted sum of values.

    Args:
        module: The attention layer calling (for `training`).
        q, k, v: Queries (batch, n_heads, queries, head_dim); keys and values (batch, n_heads, keys, head_dim).
        attention_mask: (batch, 1, queries, keys), boolean (True where a query may look at a key) or additive (0
            there, a large negative number elsewhere); None means plain causal attention.
        dropout: Probability of dropping an attention weight (0 outside training).
        scaling: Factor on the scores, 1 / sqrt(head_dim).

    Returns:
        The context (batch, queries, n_heads, head_dim) and the attention weights (batch, n_heads, queries, keys).
    """
    attn_scores = (q @ k.transpose(-2, -1)) * scaling  # (batch, n_heads, queries, keys)
    if attention_mask is None and q.shape[-2] > 1:
        # Plain causal attention: query i sees keys 0..i (like the fused kernel's is_causal).
        attention_mask = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril()
    if attention_mask is not None and attention_mask.dtype == torch.bool:
        # The dtype's lowest value rather than -inf: a padding query that sees no key gets uniform weights, not NaN.
        attn_scores = attn_scores.masked_fill(~attention_mask, torch.finfo(attn_scores.dtype).min)
    elif attention_mask is not None:
        attn_scores = attn_scores + attention_mask
    attn_weights = torch.softmax(attn_scores, dim=-1)
    context = F.dropout(attn_weights, p=dropout, training=module.training) @ v  # (batch, n_heads, queries, head_dim)
    return context.transpose(1, 2), attn_weights


class MultiHeadAttention(nn.Module):
    """Causal self-attention: every token looks at itself and the tokens before it, in n_heads subspaces at once."""

    def __init__(self, config: GPT2EduConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx  # HF: which slot of the KV cache belongs to this layer
        self.is_causal = True  # HF: read by transformers' attention kernels
        self.n_heads = config.n_heads
        self.head_dim = config.emb_dim // config.n_heads
        self.scaling = self.head_dim**-0.5  # 1 / sqrt(head_dim) on the scores; HF: an attribute, as vLLM reads it
        self.W_query = nn.Linear(config.emb_dim, config.emb_dim, bias=config.qkv_bias)
        self.W_key = nn.Linear(config.emb_dim, config.emb_dim, bias=config.qkv_bias)
        self.W_value = nn.Linear(config.emb_dim, config.emb_dim, bias=config.qkv_bias)
        self.out_proj = nn.Linear(config.emb_dim, config.emb_dim)
        self.out_proj.writes_to_residual = True  # GPT-2 initialises it smaller: see _init_weights
        self.dropout = nn.Dropout(config.drop_rate)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        output_attentions: bool = False,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attend over the sequence (and over the cached past, when there is one).

        Args:
            hidden_states: Input of shape (batch, seq, emb_dim).
            attention_mask: The mask `create_causal_mask` made for the attention implementation in use.
            cache: Keys and values of the tokens seen so far; this layer appends its new ones.
            output_attentions: Also return the attention weights (computed by `eager_attention`).
            **kwargs: HF: passed on to the attention function (position_ids, flash attention's sequence lengths).

        Returns:
            Tensor of shape (batch, seq, emb_dim), and the attention weights or None.
        """
        batch, seq_len, emb_dim = hidden_states.shape
        # (batch, seq, emb_dim) -> (batch, n_heads, seq, head_dim)
        q = self.W_query(hidden_states).view(batch, seq_len, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.W_key(hidden_states).view(batch, seq_len, self.n_heads, self.head_dim).transpose(1, 2)
        v = self.W_value(hidden_states).view(batch, seq_len, self.n_heads, self.head_dim).transpose(1, 2)

        if cache is not None:
            # HF: store this step's keys and values and get back the whole history, (batch, n_heads, keys, head_dim)
            k, v = cache.update(k, v, self.layer_idx)

        # HF: config._attn_implementation picks the kernel: "eager" is eager_attention above; "sdpa" (the default) is
        # PyTorch's fused attention, the same arithmetic without materialising the weights; flash attention and the
        # kernels transformers offers plug in the same way. Only eager_attention can return the weights.
        attention = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, eager_attention)
        if output_attentions:
            if self.config._attn_implementation not in ("eager", "sdpa"):
                raise ValueError(
                    f"output_attentions=True needs the eager attention, but the model uses "
                    f"{self.config._attn_implementation!r}; call model.set_attn_implementation('eager') first."
                )
            attention = eager_attention  # an sdpa mask (boolean or None) means the same to eager_attention
        dropout = self.dropout.p if self.training else 0.0
        context, attn_weights = attention(
            self, q, k, v, attention_mask, dropout=dropout, scaling=self.scaling, **kwargs
        )
        context = context.reshape(batch, seq_len, emb_dim)  # (batch, seq, n_heads, head_dim) -> (batch, seq, emb_dim)
        return self.out_proj(context), attn_weights


class TransformerBlock(GradientCheckpointingLayer):
    """Pre-norm block: x + attention(norm(x)), then x + feed_forward(norm(x)), with dropout on each branch."""

    # HF: GradientCheckpointingLayer lets model.gradient_checkpointing_enable() recompute this block in backward.

    def __init__(self, config: GPT2EduConfig, layer_idx: int):
        super().__init__()
        self.att = MultiHeadAttention(config, layer_idx)
        self.ff = FeedForward(config)
        self.norm1 = LayerNorm(config.emb_dim, eps=config.layer_norm_eps)
        self.norm2 = LayerNorm(config.emb_dim, eps=config.layer_norm_eps)
        self.drop_shortcut = nn.Dropout(config.drop_rate)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        output_attentions: bool = False,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        shortcut = hidden_states
        hidden_states, attn_weights = self.att(
            self.norm1(hidden_states), attention_mask, cache, output_attentions, **kwargs
        )
        hidden_states = shortcut + self.drop_shortcut(hidden_states)

        shortcut = hidden_states
        hidden_states = self.ff(self.norm2(hidden_states))
        return shortcut + self.drop_shortcut(hidden_states), attn_weights


class GPT2EduPreTrainedModel(PreTrainedModel):
    """HF: what transformers needs to know to build, initialise, save and load the models below."""

    config_class = GPT2EduConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["TransformerBlock"]
    _input_embed_layer = "tok_emb"  # HF: where get_input_embeddings() and set_input_embeddings() find the embedding
    # HF: attention implementations set_attn_implementation() and from_pretrained(attn_implementation=) accept
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def _init_weights(self, module: nn.Module) -> None:
        """GPT-2's initialisation: normal(0, 0.02), zero biases, and residual projections scaled down by depth."""
        std = self.config.initializer_range
        if getattr(module, "writes_to_residual", False):
            # Each block adds two branches to the residual stream; scaling their output projections by
            # 1/sqrt(2 * n_layers) keeps the stream's variance from growing with depth (GPT-2 paper, section 2.3).
            std = std / math.sqrt(2 * self.config.n_layers)
        if isinstance(module, (nn.Linear, nn.Embedding)):
            init.normal_(module.weight, mean=0.0, std=std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            init.zeros_(module.bias)
        elif isinstance(module, LayerNorm):
            init.ones_(module.scale)
            init.zeros_(module.shift)


class GPT2EduModel(GPT2EduPreTrainedModel):
    """The GPT-2 body: token and position embeddings, the stack of blocks, a final LayerNorm."""

    def __init__(self, config: GPT2EduConfig):
        super().__init__(config)
        self.tok_emb = nn.Embedding(config.vocab_size, config.emb_dim)
        self.pos_emb = nn.Embedding(config.context_length, config.emb_dim)
        self.drop_emb = nn.Dropout(config.drop_rate)
        self.trf_blocks = nn.ModuleList([TransformerBlock(config, layer_idx=i) for i in range(config.n_layers)])
        self.final_norm = LayerNorm(config.emb_dim, eps=config.layer_norm_eps)
        self.post_init()  # HF: initialise the weights and set up gradient checkpointing, tying and the like

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")  # HF: transformers 4's name for the cache
    @can_return_tuple  # HF: return_dict=False (or config.return_dict) gives a plain tuple, in the fields' order
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        """Run the body over a batch of token ids.

        Args:
            input_ids: Token ids, (batch, seq). With a cache, only the tokens not yet in it.
            attention_mask: 1 for real tokens and 0 for padding, (batch, past + seq); or a ready 4D mask.
            position_ids: Position of each token, (batch, seq); derived from the mask or the cache when absent.
            cache: A transformers `Cache` holding the past keys and values; created when `use_cache` and absent.
                `past_key_values` is accepted as its older name.
            use_cache: Whether to return the cache (defaults to `config.use_cache`).
            inputs_embeds: Token embeddings to use instead of `input_ids`, (batch, seq, emb_dim).
            output_attentions: Also return each block's attention weights, (batch, n_heads, seq, keys).
            output_hidden_states: Also return the residual stream: the embeddings, then each block's output (the
                last one after the final LayerNorm), each (batch, seq, emb_dim).
            **kwargs: HF: transformers' model keyword arguments (`TransformersKwargs`, e.g. flash attention's
                `cu_seq_lens_q`), passed on to the attention function; see `check_model_kwargs`.

        Returns:
            `BaseModelOutputWithPast` with `last_hidden_state` (batch, seq, emb_dim), the `cache`, and the
            `hidden_states` and `attentions` when asked for.
        """
        check_forward_arguments(self.config, input_ids, inputs_embeds, cache, output_hidden_states, kwargs)
        output_attentions = self.config.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = output_hidden_states or (
            output_hidden_states is None and self.config.output_hidden_states
        )
        if inputs_embeds is None:
            inputs_embeds = self.tok_emb(input_ids)
        batch, seq_len, _ = inputs_embeds.shape

        use_cache = self.config.use_cache if use_cache is None else use_cache
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)  # HF: the library's cache; each layer fills its own slot
        past_length = cache.get_seq_length() if cache is not None else 0

        # HF: positions the caller gives may restart inside a row (documents packed into one), see check_context.
        positions_given = position_ids is not None or "cu_seq_lens_q" in kwargs
        if position_ids is None:
            if attention_mask is not None and attention_mask.dim() == 2:
                # Left padding: count positions from each sequence's first real token, as if it were alone.
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -seq_len:]
            elif "cu_seq_lens_q" in kwargs:  # HF: documents packed into one row, given by their lengths
                position_ids = positions_of_packed_sequences(kwargs["cu_seq_lens_q"], seq_len)
            else:  # 0, 1, 2, ... after the tokens already in the cache
                position_ids = (torch.arange(seq_len, device=inputs_embeds.device) + past_length)[None]
        check_context(self.config, position_ids, past_length + seq_len, positions_given)

        hidden_states = self.drop_emb(inputs_embeds + self.pos_emb(position_ids))  # (batch, seq, emb_dim)
        # HF: the causal triangle (query i sees keys up to i), minus padding, in the form the attention kernel
        # wants; None where the kernel's own causal mode is exact. From given positions, and with no cache or an
        # empty one, the mask builder also reads documents packed into one row, and keeps them apart.
        empty_cache = cache is not None and not cache.is_compileable and past_length == 0
        mask = create_causal_mask(
            self.config,
            inputs_embeds,
            attention_mask,
            None if empty_cache else cache,
            position_ids if positions_given else None,
        )
        # Written out rather than captured with transformers' hooks: this loop is where the residual stream flows.
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for block in self.trf_blocks:
            hidden_states, attn_weights = block(
                hidden_states, mask, cache, output_attentions, position_ids=position_ids, **kwargs
            )
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            if output_attentions:
                all_attentions += (attn_weights,)
        hidden_states = self.final_norm(hidden_states)
        if output_hidden_states:
            all_hidden_states = all_hidden_states[:-1] + (hidden_states,)  # the last one after the final norm
        # HF: the cache only when asked for: transformers before 5.24 (vLLM's CPU build pins 5.19) has no `cache` field
        cached = {"cache": cache} if use_cache else {}
        return BaseModelOutputWithPast(
            last_hidden_state=hidden_states, hidden_states=all_hidden_states, attentions=all_attentions, **cached
        )


# speed: under torch.compile the loss stays out of the graph; in the graph, the logits, an output too, would get a
# zero-filled gradient as large as themselves.
@torch.compiler.disable
def next_token_loss(
    logits: torch.Tensor,
    labels: torch.LongTensor,
    num_items_in_batch: torch.Tensor | int | None = None,
    ignore_index: int = -100,
    shift_labels: torch.LongTensor | None = None,
) -> torch.Tensor:
    """The language-modelling loss: the cross-entropy of position t's logits against token t + 1.

    Args:
        logits: (batch, seq, vocab_size).
        labels: (batch, seq), usually the input ids; or pass `shift_labels`, already shifted.
        num_items_in_batch: HF: Trainer's count of scored tokens over the accumulated batch, the mean's divisor.
        ignore_index: Label of positions not to score.

    Returns:
        The scalar loss, as transformers' `ForCausalLMLoss` computes it.
    """
    if shift_labels is None:
        shift_labels = F.pad(labels, (0, 1), value=ignore_index)[:, 1:]  # nothing follows the last position
    logits, targets = logits.flatten(0, -2), shift_labels.reshape(-1).to(logits.device)  # (tokens, vocab), (tokens,)
    if logits.requires_grad:
        # speed: the same value, with a backward that needs no extra memory (NextTokenCrossEntropy, below the models)
        return NextTokenCrossEntropy.apply(logits, targets, ignore_index, num_items_in_batch)
    if num_items_in_batch is None:  # the mean over the scored positions
        return F.cross_entropy(logits.float(), targets, ignore_index=ignore_index)
    return F.cross_entropy(logits.float(), targets, ignore_index=ignore_index, reduction="sum") / num_items_in_batch


class GPT2EduForCausalLM(GPT2EduPreTrainedModel, GenerationMixin):
    """GPT-2 with its output head: next-token logits over the vocabulary, a loss, and `generate()`."""

    # HF: when config.tie_word_embeddings is set, the output head shares the token embedding matrix (OpenAI's GPT-2).
    _tied_weights_keys = {"lm_head.weight": "model.tok_emb.weight"}

    def __init__(self, config: GPT2EduConfig):
        super().__init__(config)
        self.model = GPT2EduModel(config)
        # The seed's out_head (`model.out_head` still reaches it). HF: transformers and vLLM expect `lm_head`.
        self.lm_head = nn.Linear(config.emb_dim, config.vocab_size, bias=False)
        self.post_init()
        self.register_load_state_dict_pre_hook(load_seed_head_name)  # HF: load_state_dict takes out_head.weight too

    @property
    def out_head(self) -> nn.Linear:
        return self.lm_head

    def __setattr__(self, name: str, value) -> None:
        # The book's `model.out_head = nn.Linear(...)` (chapter 6) replaces the head, as it does in the seed.
        super().__setattr__("lm_head" if name == "out_head" else name, value)

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.lm_head = new_embeddings

    def prepare_inputs_for_generation(self, input_ids: torch.LongTensor, cache: Cache | None = None, **kwargs):
        """HF: generate() past the context, as the seed's generate loop does it.

        Up to `context_length` tokens, each step feeds the new token and reuses the cached keys and values. Past it,
        the seed crops its input to the last `context_length` tokens at every step; so does this: the cache is
        emptied and the window is run whole, with positions 0..context_length-1 again. Each such step costs a full
        forward pass over the window instead of one token's.
        """
        window = self.config.context_length
        if input_ids.shape[1] > window:
            input_ids = input_ids[:, -window:]
            if kwargs.get("attention_mask") is not None:
                kwargs["attention_mask"] = kwargs["attention_mask"][:, -window:]
            kwargs.pop("position_ids", None)  # derived again from the window's mask
            kwargs["next_sequence_length"] = None  # the whole window, not just the new token
            if cache is not None:
                cache.reset()
        return super().prepare_inputs_for_generation(input_ids, cache=cache, **kwargs)

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """Next-token logits, and the language-modelling loss when labels are given.

        Args:
            input_ids, attention_mask, position_ids, cache, use_cache, inputs_embeds, output_attentions,
                output_hidden_states: As in `GPT2EduModel.forward`.
            labels: Target ids, (batch, seq), usually the input ids themselves: the model shifts them so that
                position t is scored on token t + 1. Positions labelled -100 are ignored.
            logits_to_keep: If an int n > 0, compute logits for the last n positions only (generate() needs just
                the last one); if a tensor, the sequence indices to keep. 0 keeps all.
            **kwargs: The loss's options (`num_items_in_batch`, `ignore_index`, `shift_labels`), and HF: the model
                keyword arguments `GPT2EduModel.forward` takes.

        Returns:
            `CausalLMOutputWithPast` with `loss`, `logits` (batch, kept positions, vocab_size), `cache`, and the
            `hidden_states` and `attentions` when asked for.
        """
        loss_kwargs = {name: kwargs.pop(name) for name in LOSS_KWARGS if name in kwargs}
        outputs = self.model(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=use_cache,
            inputs_embeds=inputs_embeds,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        # speed: the output head is the largest matmul in the model; skip positions whose logits nobody reads.
        if isinstance(logits_to_keep, int):
            hidden_states = hidden_states[:, -logits_to_keep:] if logits_to_keep > 0 else hidden_states
        else:
            hidden_states = hidden_states[:, logits_to_keep]
        logits = self.lm_head(hidden_states)  # (batch, seq, vocab_size)

        loss = None
        if labels is not None:
            loss = next_token_loss(logits, labels, **loss_kwargs)  # HF: Trainer passes num_items_in_batch
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


# --- the task heads: the same body, another layer on top (the book's chapter 6) -----------------------------------


def classified_position(config: GPT2EduConfig, input_ids: torch.LongTensor | None, batch: int) -> torch.Tensor | int:
    """Which position of each row the sequence classifier reads (`config.classifier_pooling`).

    "last_position" is the book's: the last position, whatever token sits there. "last_non_padding" is GPT-2's: the
    rightmost token that is not `pad_token_id`, the last real token of a right- or a left-padded row alike.

    Returns:
        -1 (the last position of every row), or each row's position, (batch,).
    """
    if config.classifier_pooling == "last_position":
        return -1
    if config.classifier_pooling != "last_non_padding":
        raise ValueError(
            f"classifier_pooling must be 'last_non_padding' or 'last_position', got {config.classifier_pooling!r}."
        )
    if config.pad_token_id is None:
        if batch != 1:  # GPT-2's error, and the fix
            raise ValueError(
                "Cannot handle batch sizes > 1 if no padding token is defined. Set config.pad_token_id to the token "
                "the batch is padded with (the book pads with 50256, <|endoftext|>)."
            )
        return -1
    if input_ids is None:
        logger.warning_once("Padding cannot be seen in inputs_embeds: the classifier reads the last position.")
        return -1
    not_padding = (input_ids != config.pad_token_id).int()
    positions = torch.arange(input_ids.shape[-1], device=input_ids.device, dtype=torch.int32)
    return (positions * not_padding).argmax(-1)  # the rightmost real token of each row


class GPT2EduForSequenceClassification(GPT2EduPreTrainedModel):
    """GPT-2 as a text classifier: a linear layer `score` on the hidden state of one token per text.

    Written out rather than taken from transformers' `GenericForSequenceClassification` (which the two heads below
    use): that one reads only GPT-2's token, the last that is not padding, with a `score` without bias; the book's
    head reads the last position and has a bias (`config.classifier_pooling`, `config.classifier_bias`).
    """

    # HF: a causal-LM folder (its head saved as out_head.weight) loads with only `score` reported missing
    _keys_to_ignore_on_load_unexpected = [r"^out_head\."]
    # HF: the loss is a mean over the batch; so Trainer passes no token count and scales it for gradient accumulation
    accepts_loss_kwargs = False

    def __init__(self, config: GPT2EduConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = GPT2EduModel(config)
        # GPT-2's score has no bias; the book's chapter-6 head, Linear(emb_dim, num_classes), has one.
        self.score = nn.Linear(config.emb_dim, config.num_labels, bias=config.classifier_bias)
        self.post_init()

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> SequenceClassifierOutputWithPast:
        """One row of logits per text, and the loss when labels are given.

        Args:
            input_ids, attention_mask, position_ids, cache, use_cache, inputs_embeds, output_attentions,
                output_hidden_states, **kwargs: As in `GPT2EduModel.forward`.
            labels: (batch,) class ids for single-label classification (-100 is ignored), (batch, num_labels)
                floats for multi-label, (batch,) floats for regression; `config.problem_type` says which, or is
                inferred from them as transformers does.

        Returns:
            `SequenceClassifierOutputWithPast` with `loss`, `logits` (batch, num_labels), `cache`, and the
            `hidden_states` and `attentions` when asked for.
        """
        outputs = self.model(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=use_cache,
            inputs_embeds=inputs_embeds,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state  # (batch, seq, emb_dim)
        batch = hidden_states.shape[0]
        # Only the position read goes through the head: the logits the book picks from every position's, x[:, -1, :].
        pooled = hidden_states[
            torch.arange(batch, device=hidden_states.device), classified_position(self.config, input_ids, batch)
        ]
        logits = self.score(pooled)  # (batch, num_labels)

        loss = None
        if labels is not None:
            # HF: transformers' loss for the three problem types: MSE, cross-entropy or binary cross-entropy
            loss = self.loss_function(labels=labels, pooled_logits=logits, config=self.config)
        return SequenceClassifierOutputWithPast(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


class GPT2EduForTokenClassification(GenericForTokenClassification, GPT2EduPreTrainedModel):
    """GPT-2 as a tagger: dropout, then a linear layer `score` giving every token its label logits.

    HF: transformers' `GenericForTokenClassification` is the whole model: the body (`self.model`, made by AutoModel,
    which knows GPT2EduModel from the bottom of this file), dropout `config.classifier_dropout` (0.1 when unset, as
    GPT-2's), `score` with a bias, and the cross-entropy over the tokens that ignores -100 labels.
    """

    _keys_to_ignore_on_load_unexpected = [r"^out_head\."]
    accepts_loss_kwargs = False  # HF: as the sequence classifier: its loss is a mean, not a sum over a token count


class GPT2EduForQuestionAnswering(GenericForQuestionAnswering, GPT2EduPreTrainedModel):
    """GPT-2 for extractive question answering: a linear layer `qa_outputs` giving each token a start and end logit.

    HF: transformers' `GenericForQuestionAnswering` is the whole model, as for the tagger; it looks for the token
    embedding under `embed_tokens`, so point it back at ours (`tok_emb`).
    """

    _keys_to_ignore_on_load_unexpected = [r"^out_head\."]
    get_input_embeddings = GPT2EduPreTrainedModel.get_input_embeddings
    set_input_embeddings = GPT2EduPreTrainedModel.set_input_embeddings


# --- after the models: a faster loss, and what transformers' callers hand the models -----------------------------


class NextTokenCrossEntropy(torch.autograd.Function):
    """Cross-entropy of next-token logits, with its textbook gradient, softmax(logits) - one_hot(target), written out.

    speed: F.cross_entropy's backward zero-fills a (tokens, vocab_size) tensor, scatters the targets into it, then runs
    log_softmax's backward over it; with GPT-2's 50257-token vocabulary those passes cost about as much as the blocks.
    This backward turns the saved log-probabilities into the gradient in place, in one pass and no new memory.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, ignore_index: int, num_items_in_batch):
        log_probs = torch.log_softmax(logits.float(), dim=-1)  # (tokens, vocab_size)
        scored = targets != ignore_index
        targets = targets.where(scored, 0)
        # HF: Trainer passes the number of scored tokens in the whole accumulated batch, so that gradient
        # accumulation averages exactly; on its own the loss is the mean over this batch's scored tokens.
        num_items = scored.sum() if num_items_in_batch is None else torch.as_tensor(num_items_in_batch)
        num_items = num_items.to(logits.device)
        ctx.save_for_backward(log_probs, targets, scored, num_items)
        ctx.logits_dtype = logits.dtype
        return -(log_probs.gather(1, targets[:, None]).squeeze(1) * scored).sum() / num_items

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss: torch.Tensor):
        # A second backward through the same graph finds log_probs modified and raises, rather than going wrong.
        log_probs, targets, scored, num_items = ctx.saved_tensors
        grad = log_probs.exp_()  # softmax, written over the saved log-probabilities
        grad[torch.arange(len(targets), device=grad.device), targets] -= 1  # minus the one-hot targets
        grad *= (scored * grad_loss / num_items)[:, None]  # unscored positions get no gradient
        return grad.to(ctx.logits_dtype), None, None, None


# HF: the loss's options that Trainer and TRL pass to forward
LOSS_KWARGS = ("num_items_in_batch", "ignore_index", "shift_labels")
# HF: the keyword arguments transformers hands every model (`TransformersKwargs`: flash attention's packed-sequence
# lengths `cu_seq_lens_q/k` and `max_length_q/k` among them); they travel down to the attention function.
MODEL_KWARGS = set(TransformersKwargs.__annotations__) - {"output_attentions", "output_hidden_states", "position_ids"}
BUILT_IN_ATTENTION = ("eager", "sdpa", "flash_attention_2", "flash_attention_3", "flash_attention_4", "flex_attention")


def check_forward_arguments(config, input_ids, inputs_embeds, cache, output_hidden_states, kwargs: dict) -> None:
    """Refuse arguments the model would misread or silently ignore (a misspelt one among them).

    `TransformersKwargs` are accepted; so is anything else when the attention function is not one of transformers'
    own (a serving engine registers its own in `AttentionInterface`, with arguments of its own, like vLLM's
    `attention_instances`).

    Raises:
        TypeError: For unknown arguments, or a cache that is not a transformers `Cache`.
        ValueError: For arguments that contradict each other, or that GPT-2 cannot honour (`is_causal=False`,
            `output_router_logits=True`).
    """
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
    if cache is not None and not isinstance(cache, Cache):
        raise TypeError(f"cache must be a transformers Cache (e.g. DynamicCache), got {type(cache).__name__}.")
    if output_hidden_states is not None and not isinstance(output_hidden_states, bool):
        raise ValueError("output_hidden_states must be True or False; to keep some layers, index the tuple.")
    check_model_kwargs(config, kwargs)


def check_context(config: GPT2EduConfig, position_ids: torch.Tensor, row_length: int, positions_given: bool) -> None:
    """Refuse a sequence longer than the learned positions.

    The sequence is the row (past and new tokens), unless the caller gave the positions: documents packed into one
    row restart at 0, so such a row may be longer than the context, and then its positions are read (except under
    torch.compile, where reading them back would break the graph).
    """
    longest = row_length
    if positions_given and isinstance(row_length, int) and row_length > config.context_length:
        if torch.compiler.is_compiling():
            return
        longest = int(position_ids.max()) + 1
    if isinstance(longest, int) and longest > config.context_length:
        raise ValueError(
            f"Sequence of {longest} tokens is longer than context_length ({config.context_length}); crop the input to "
            f"its last {config.context_length} tokens."
        )


def check_model_kwargs(config: GPT2EduConfig, kwargs: dict) -> None:
    """HF: refuse keyword arguments the model would ignore, so that a misspelt one is not silently dropped.

    `TransformersKwargs` are accepted; so is anything else when the attention function is not one of transformers'
    own (a serving engine registers its own in `AttentionInterface`, with arguments of its own, like vLLM's
    `attention_instances`).

    Raises:
        TypeError: Naming the unknown arguments.
        ValueError: For `is_causal=False` or `output_router_logits=True`, which GPT-2 cannot honour.
    """
    unknown = sorted(kwargs.keys() - MODEL_KWARGS)
    if unknown and config._attn_implementation in BUILT_IN_ATTENTION:
        raise TypeError(
            f"{unknown} are not arguments of gpt2edu's forward() (it takes transformers' model keyword arguments: "
            f"{sorted(MODEL_KWARGS)}); the cache is `cache` (or `past_key_values`)."
        )
    if kwargs.get("is_causal") is False or kwargs.get("output_router_logits"):
        raise ValueError("gpt2edu is a causal model without experts: is_causal=False and output_router_logits=True.")


def load_seed_head_name(module, state_dict: dict, prefix: str, *args) -> None:
    """HF: a state dict naming the head as the seed and saved checkpoints do, `out_head`, loads into `lm_head`."""
    for name in [name for name in state_dict if name.startswith(prefix + "out_head.")]:
        state_dict[prefix + "lm_head." + name.removeprefix(prefix + "out_head.")] = state_dict.pop(name)


def positions_of_packed_sequences(cu_seq_lens: torch.Tensor, seq_len: int) -> torch.LongTensor:
    """HF: position_ids (1, seq_len) restarting at 0 at each sequence start of flash attention's `cu_seq_lens`."""
    positions = torch.arange(seq_len, device=cu_seq_lens.device)
    starts = cu_seq_lens[:-1].to(positions.device)
    return (positions - starts[torch.searchsorted(starts, positions, right=True) - 1])[None]


# HF: checkpoints keep the seed's name for the head: from_pretrained (and vLLM, which reads the same table) loads
# `out_head.weight` into `lm_head`, and save_pretrained writes it back as `out_head.weight`.
register_checkpoint_conversion_mapping("GPT2EduForCausalLM", [WeightRenaming(r"^out_head", "lm_head")], overwrite=True)
# HF: make the Auto classes know gpt2edu (AutoModelForCausalLM.from_pretrained works once this module is imported),
# and have save_pretrained copy this file and the config's next to the weights for trust_remote_code users.
AutoConfig.register("gpt2edu", GPT2EduConfig, exist_ok=True)
AutoModel.register(GPT2EduConfig, GPT2EduModel, exist_ok=True)
AutoModelForCausalLM.register(GPT2EduConfig, GPT2EduForCausalLM, exist_ok=True)
GPT2EduConfig.register_for_auto_class()
GPT2EduModel.register_for_auto_class("AutoModel")
GPT2EduForCausalLM.register_for_auto_class("AutoModelForCausalLM")
for auto_class, head in (
    (AutoModelForSequenceClassification, GPT2EduForSequenceClassification),
    (AutoModelForTokenClassification, GPT2EduForTokenClassification),
    (AutoModelForQuestionAnswering, GPT2EduForQuestionAnswering),
):
    auto_class.register(GPT2EduConfig, head, exist_ok=True)
    head.register_for_auto_class(auto_class.__name__)

__all__ = [
    "GPT2EduModel",
    "GPT2EduForCausalLM",
    "GPT2EduForSequenceClassification",
    "GPT2EduForTokenClassification",
    "GPT2EduForQuestionAnswering",
    "GPT2EduPreTrainedModel",
]
