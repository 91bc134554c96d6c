"""An independent implementation of the seed's GPT model, to build the checkpoints the converter reads.

It follows the seed's own code (the book's `GPTModel`) and its state-dict layout, and shares nothing with
modeling_gpt2edu.py: if the converter or gpt2edu's model got the layout or the arithmetic wrong, the two disagree.
"""

import math
import types
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class SeedConfig:
    """The seed's config fields, small by default."""

    vocab_size: int = 101
    context_length: int = 32
    emb_dim: int = 32
    n_heads: int = 4
    n_layers: int = 2
    drop_rate: float = 0.0
    qkv_bias: bool = False


class MultiHeadAttention(nn.Module):
    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        self.d_out, self.num_heads, self.head_dim = d_out, num_heads, d_out // num_heads
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length), diagonal=1))

    def forward(self, x):
        b, num_tokens, _ = x.shape
        queries = self.W_query(x).view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
        keys = self.W_key(x).view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
        values = self.W_value(x).view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
        attn_scores = queries @ keys.transpose(2, 3)
        attn_scores.masked_fill_(self.mask.bool()[:num_tokens, :num_tokens], -torch.inf)
        attn_weights = self.dropout(torch.softmax(attn_scores / keys.shape[-1] ** 0.5, dim=-1))
        context = (attn_weights @ values).transpose(1, 2).reshape(b, num_tokens, self.d_out)
        return self.out_proj(context)


class LayerNorm(nn.Module):
    def __init__(self, emb_dim):
        super().__init__()
        self.eps = 1e-5
        self.scale = nn.Parameter(torch.ones(emb_dim))
        self.shift = nn.Parameter(torch.zeros(emb_dim))

    def forward(self, x):
        mean = x.mean(dim=-1, keepdim=True)
        var = x.var(dim=-1, keepdim=True, unbiased=False)
        return self.scale * (x - mean) / torch.sqrt(var + self.eps) + self.shift


class GELU(nn.Module):
    def forward(self, x):
        return 0.5 * x * (1 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


class FeedForward(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(cfg.emb_dim, 4 * cfg.emb_dim), GELU(), nn.Linear(4 * cfg.emb_dim, cfg.emb_dim)
        )

    def forward(self, x):
        return self.layers(x)


class TransformerBlock(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.att = MultiHeadAttention(
            cfg.emb_dim, cfg.emb_dim, cfg.context_length, cfg.drop_rate, cfg.n_heads, cfg.qkv_bias
        )
        self.ff = FeedForward(cfg)
        self.norm1 = LayerNorm(cfg.emb_dim)
        self.norm2 = LayerNorm(cfg.emb_dim)
        self.drop_shortcut = nn.Dropout(cfg.drop_rate)

    def forward(self, x):
        x = x + self.drop_shortcut(self.att(self.norm1(x)))
        return x + self.drop_shortcut(self.ff(self.norm2(x)))


class GPTModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.emb_dim)
        self.pos_emb = nn.Embedding(cfg.context_length, cfg.emb_dim)
        self.drop_emb = nn.Dropout(cfg.drop_rate)
        self.trf_blocks = nn.Sequential(*[TransformerBlock(cfg) for _ in range(cfg.n_layers)])
        self.final_norm = LayerNorm(cfg.emb_dim)
        self.out_head = nn.Linear(cfg.emb_dim, cfg.vocab_size, bias=False)

    def forward(self, in_idx):
        _, seq_len = in_idx.shape
        x = self.tok_emb(in_idx) + self.pos_emb(torch.arange(seq_len, device=in_idx.device))
        x = self.trf_blocks(self.drop_emb(x))
        return self.out_head(self.final_norm(x))


def seed_model(seed: int = 0, **overrides) -> GPTModel:
    """A seed model with random weights, including random norms and biases so that every tensor matters."""
    torch.manual_seed(seed)
    model = GPTModel(SeedConfig(**overrides)).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("scale", "shift", "bias")):
                param.normal_(1.0 if name.endswith("scale") else 0.0, 0.1)
    return model


def generate_text_simple(model, idx, max_new_tokens, context_size):
    """The seed's greedy loop: recompute the (cropped) sequence each step and append the argmax."""
    for _ in range(max_new_tokens):
        with torch.no_grad():
            logits = model(idx[:, -context_size:])[:, -1, :]
        idx = torch.cat((idx, torch.argmax(logits, dim=-1, keepdim=True)), dim=1)
    return idx


def config_module() -> types.ModuleType:
    """A module named `config` holding a `GPTConfig` dataclass, like the seed's config.py (to pickle an instance)."""
    module = types.ModuleType("config")
    exec(  # the class must be defined in the module itself, so that pickle records it as config.GPTConfig
        "from dataclasses import dataclass\n"
        "@dataclass\n"
        "class GPTConfig:\n"
        "    vocab_size: int = 50257\n"
        "    context_length: int = 1024\n"
        "    emb_dim: int = 768\n"
        "    n_heads: int = 12\n"
        "    n_layers: int = 12\n"
        "    drop_rate: float = 0.1\n"
        "    qkv_bias: bool = False\n",
        module.__dict__,
    )
    return module
