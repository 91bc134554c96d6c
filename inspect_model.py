"""Look inside a GPT-2: attention maps, the logit lens and the next-token probabilities, as pictures and as JSON.

    python inspect_model.py --model gpt2edu-out --prompt "Every effort moves you" --out inspect-out

--model is a gpt2edu folder, a transformers GPT-2 folder or a Hub id (offline: one in the local Hub cache). --out gets
attention.png, logit_lens.png, next_token.png and inspection.json, all four or none.
"""

import argparse
import io
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
from huggingface_hub import constants as hub_constants
from matplotlib import colormaps
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from transformers import PreTrainedModel

from gpt2edu.cli import EXIT_OK, UsageError, quiet_logs, report
from gpt2edu.files import atomic_write, check_output_dir
from gpt2edu.loading import get_device, load_model_and_tokenizer, looks_like_hub_id

OUTPUT_FILES = ("attention.png", "logit_lens.png", "next_token.png", "inspection.json")


def load_for_inspection(name_or_path: str, device: torch.device | str = "cpu"):
    """Load a causal LM (float32, eval, eager attention so that it returns attention weights) and its tokenizer.

    Raises:
        ValueError: If there is no such folder or Hub id, or it holds no model.
    """
    try:
        model, tokenizer = load_model_and_tokenizer(name_or_path, device)
    except ValueError as error:
        if os.path.exists(name_or_path):
            raise
        offline = looks_like_hub_id(name_or_path) and hub_constants.HF_HUB_OFFLINE
        where = " (HF_HUB_OFFLINE is set: only the local Hub cache was searched)" if offline else ""
        raise ValueError(f"no such model folder or Hub id: {name_or_path!r}{where}") from error
    # HF: transformers' GPT-2 returns attention weights only from its eager kernel; gpt2edu returns them either way.
    model.set_attn_implementation("eager")
    return model.float().eval(), tokenizer


def final_norm_of(model: PreTrainedModel) -> torch.nn.Module:
    """The LayerNorm between the last block and the head: gpt2edu's `final_norm`, transformers GPT-2's `ln_f`."""
    if hasattr(model, "model") and hasattr(model.model, "final_norm"):
        return model.model.final_norm
    if hasattr(model, "transformer") and hasattr(model.transformer, "ln_f"):
        return model.transformer.ln_f
    raise ValueError(
        f"cannot find the final LayerNorm of {type(model).__name__}; gpt2edu and GPT-2 models are supported"
    )


@torch.no_grad()
def look_inside(model: PreTrainedModel, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """Run one prompt and collect its attention weights, the logit lens and the next-token probabilities.

    Args:
        model: A gpt2edu or GPT-2 causal LM in eval mode with eager attention.
        input_ids: The prompt's token ids, shape (1, seq).

    Returns:
        On the CPU, in float32: "attentions" (n_layers, n_heads, seq, seq), softmax weights of each query (row) over
        the keys (columns); "lens_ids" and "lens_probs" (n_layers + 1, seq), the token each layer would predict at each
        position and its probability (row 0: the embeddings, row i: block i - 1's output); "next_probs" (vocab_size,),
        the model's own next-token distribution after the prompt.
    """
    output = model(
        input_ids,
        attention_mask=torch.ones_like(input_ids),
        output_attentions=True,
        output_hidden_states=True,
    )
    head, norm = model.get_output_embeddings(), final_norm_of(model)
    *inner, last = output.hidden_states  # n_layers + 1 states; the last one has been through the final norm already
    lens_ids, lens_probs = [], []
    for hidden in [norm(h) for h in inner] + [last]:
        probs, ids = head(hidden[0]).float().softmax(dim=-1).max(dim=-1)  # (seq,) each
        lens_ids.append(ids)
        lens_probs.append(probs)
    return {
        "attentions": torch.stack(output.attentions, dim=1)[0].float().cpu(),  # (n_layers, n_heads, seq, seq)
        "lens_ids": torch.stack(lens_ids).cpu(),
        "lens_probs": torch.stack(lens_probs).cpu(),
        "next_probs": output.logits[0, -1].float().softmax(dim=-1).cpu(),
    }


def float32_list(tensor: torch.Tensor) -> list:
    """Nested lists of the shortest decimals that read back as the same float32 values (0.3, not 0.30000001...)."""
    return tensor.numpy().astype(str).astype(np.float64).tolist()


def inspection_record(
    prompt: str, token_ids: list[int], found: dict[str, torch.Tensor], tokenizer, top_k: int
) -> dict:
    """The numbers of the pictures as JSON-ready lists; token strings are each id decoded on its own."""

    def entry(token_id: int, prob: float) -> dict:
        return {"token_id": token_id, "token": tokenizer.decode([token_id]), "prob": float(str(np.float32(prob)))}

    top_probs, top_ids = found["next_probs"].topk(min(top_k, found["next_probs"].numel()))
    return {
        "prompt": prompt,
        "tokens": [tokenizer.decode([token_id]) for token_id in token_ids],
        "attentions": float32_list(found["attentions"]),  # [layer][head][query][key]
        "logit_lens": [  # [layer][position]: layer 0 = the embeddings, then each block's output
            [entry(i, p) for i, p in zip(ids.tolist(), probs.tolist(), strict=True)]
            for ids, probs in zip(found["lens_ids"], found["lens_probs"], strict=True)
        ],
        "next_token": [entry(i, p) for i, p in zip(top_ids.tolist(), top_probs.tolist(), strict=True)],
    }


def visible(token: str, max_chars: int | None = None, space: str = "␣") -> str:
    """A token as a label: spaces as '␣', newlines as '↵', other control characters escaped, '$' kept literal."""
    shown = token.replace(" ", space).replace("\n", "↵").replace("\t", "⇥")
    shown = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in shown)
    if max_chars and len(shown) > max_chars:
        shown = shown[: max_chars - 1] + "…"
    return shown.replace("$", r"\$")  # matplotlib reads text between two '$' as math


def plot_attention(attentions: torch.Tensor, tokens: list[str], layers: list[int], heads: list[int]) -> Figure:
    """A grid of (query x key) heat maps, one per chosen block (rows) and head (columns); one map is drawn large."""
    attentions, labels, seq = attentions.numpy(), [visible(t, 12) for t in tokens], len(tokens)
    n_rows, n_cols = len(layers), len(heads)
    size = 7.0 if n_rows == n_cols == 1 else min(2.5, 13 / max(n_rows, n_cols))  # inches per map
    fontsize = min(11.0, max(3.0, 0.75 * 72 * size / seq))  # fits one label per row
    fig = Figure(figsize=(size * n_cols + 2, size * n_rows + 1.5), layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    cmap = colormaps["viridis"].with_extremes(bad="white")  # white: the future keys a causal model may not see
    future = np.triu(np.ones((seq, seq), dtype=bool), k=1)
    for row, layer in enumerate(layers):
        for col, head in enumerate(heads):
            ax = axes[row, col]
            image = ax.imshow(np.ma.masked_where(future, attentions[layer, head]), cmap=cmap, vmin=0, vmax=1)
            ax.set_xticks(range(seq), labels if row == n_rows - 1 else [], rotation=90, fontsize=fontsize)
            ax.set_yticks(range(seq), labels if col == 0 else [], fontsize=fontsize)
            ax.tick_params(length=0)
            if row == 0:
                ax.set_title(f"head {head}", fontsize=min(12, 4 + 3 * size))
            if col == 0:
                ax.set_ylabel(f"block {layer}", fontsize=min(12, 4 + 3 * size))
    if n_rows == n_cols == 1:
        axes[0, 0].set_title(f"block {layers[0]}, head {heads[0]}")
        axes[0, 0].set_xlabel("key: the token attended to", fontsize=11)
        axes[0, 0].set_ylabel("query: the token attending", fontsize=11)
        fig.suptitle("Attention weights: each row shows where one token looks (rows sum to 1; white = masked future)")
    else:
        fig.suptitle(
            "Attention weights, block by block (rows) and head by head (columns)\n"
            "in each map: row = the token attending (query), column = the token it attends to (key)\n"
            "each row sums to 1; white = later tokens, hidden by the causal mask"
        )
    fig.colorbar(image, ax=axes, shrink=min(1.0, 6 / (size * n_rows)), label="attention weight")
    return fig


def plot_logit_lens(lens_tokens: list[list[str]], lens_probs: torch.Tensor, tokens: list[str]) -> Figure:
    """The logit lens as a table: rows = layers (embeddings at the bottom), columns = positions, text = the guess."""
    n_rows, seq = lens_probs.shape
    fig = Figure(figsize=(3.5 + 1.1 * seq, 2.2 + 0.45 * n_rows), layout="constrained")
    ax = fig.subplots()
    # Log scale: a small model's guesses are far from certain, and 1e-5 is about a uniform guess over 50257 tokens.
    norm = LogNorm(vmin=1e-5, vmax=1)
    image = ax.imshow(lens_probs.clamp(min=1e-5).numpy(), cmap="Blues", norm=norm, origin="lower", aspect="auto")
    for layer in range(n_rows):
        for position in range(seq):
            prob = lens_probs[layer, position].item()
            color = "white" if norm(prob) > 0.6 else "black"
            text = visible(lens_tokens[layer][position], 9)
            ax.text(position, layer, text, ha="center", va="center", fontsize=10, color=color)
    ax.set_yticks(range(n_rows), ["embeddings"] + [f"block {i}" for i in range(n_rows - 1)])
    ax.set_xticks(range(seq), [visible(t, 12) for t in tokens], rotation=45, ha="right")
    ax.set_xlabel("input token (each column guesses the token that follows it)")
    top = ax.secondary_xaxis("top")
    top.set_xticks(range(seq), [visible(t, 12) for t in tokens[1:]] + ["?"], rotation=45, ha="left")
    top.set_xlabel("the token that actually follows")
    ax.set_title("Logit lens: the next token each layer would predict if the model stopped there", fontsize=11)
    fig.colorbar(image, ax=ax, label="probability of that guess (log scale)")
    return fig


def plot_next_token(next_token: list[dict], prompt: str) -> Figure:
    """A horizontal bar chart of the top-k next tokens, likeliest at the top."""
    fig = Figure(figsize=(7, 1.5 + 0.35 * len(next_token)), layout="constrained")
    ax = fig.subplots()
    probs = [item["prob"] for item in next_token]
    bars = ax.barh(range(len(probs)), probs, color="tab:blue")
    ax.bar_label(bars, [f"{p:.3g}" for p in probs], padding=3, fontsize=9)
    ax.set_yticks(range(len(probs)), [visible(item["token"], 20) for item in next_token])
    ax.invert_yaxis()
    ax.set_xlim(0, max(probs) * 1.2)
    ax.set_xlabel("probability")
    short = prompt if len(prompt) <= 60 else "…" + prompt[-59:]
    ax.set_title(f"The {len(probs)} likeliest next tokens after the prompt\n“{visible(short, space=' ')}”")
    return fig


def png_bytes(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def check_out(out_dir: Path) -> None:
    """Refuse an --out that is a file, or that cannot be created or written (gpt2edu.files.check_output_dir).

    Raises:
        UsageError: Naming --out and the folder at fault.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out_dir} exists and is not a folder")
    check_output_dir(out_dir, "--out")


def write_outputs(out_dir: Path, files: dict[str, bytes]) -> None:
    """Write all the files into `out_dir` or none (gpt2edu.files.atomic_write): staged in a hidden folder inside it,
    then each renamed into place. Other files in `out_dir` are left alone; on failure, a folder this call created is
    removed again.
    """
    with atomic_write(out_dir, into=True) as staging:
        for name, data in files.items():
            (staging / name).write_bytes(data)


def summary(record: dict) -> str:
    """A few lines for the terminal: the top next tokens, and each layer's lens guess at the last position."""
    lines = [f"Prompt: {len(record['tokens'])} tokens: " + " ".join(repr(t) for t in record["tokens"])]
    lines.append("Next token:")
    lines += [f"  {item['prob']:<9.3g}  {item['token']!r}" for item in record["next_token"]]
    lines.append(f"Logit lens at the last position (after {record['tokens'][-1]!r}):")
    for layer, row in enumerate(record["logit_lens"]):
        name = "embeddings" if layer == 0 else f"block {layer - 1}"
        lines.append(f"  {name:<10}  {row[-1]['prob']:<9.3g}  {row[-1]['token']!r}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Draw the attention maps, logit lens and next-token probabilities.")
    parser.add_argument("--model", required=True, help="gpt2edu or GPT-2 folder, or Hub id")
    parser.add_argument("--prompt", required=True, help="text to look at")
    parser.add_argument("--out", required=True, help="folder for the PNGs and inspection.json (made if missing)")
    parser.add_argument("--top-k", type=int, default=10, help="next tokens to show (default 10)")
    parser.add_argument("--layer", type=int, default=None, help="draw only this block's attention (0-based)")
    parser.add_argument("--head", type=int, default=None, help="draw only this head's attention (0-based)")
    parser.add_argument("--device", default=None, help="cpu, cuda, mps... (default: the best available)")
    return parser.parse_args(argv)


def run_inspection(args: argparse.Namespace) -> dict:
    """Check the arguments, load the model, look inside, and write the four files; return the JSON record."""
    if not args.prompt.strip():
        raise ValueError("--prompt is empty; pass some text to look at")
    if args.top_k < 1:
        raise ValueError(f"--top-k must be at least 1, got {args.top_k}")
    out_dir = Path(args.out)
    check_out(out_dir)
    model, tokenizer = load_for_inspection(args.model, get_device(args.device))
    config = model.config
    for flag, value, count, what in (
        ("--layer", args.layer, config.num_hidden_layers, "blocks"),
        ("--head", args.head, config.num_attention_heads, "heads"),
    ):
        if value is not None and not 0 <= value < count:
            raise ValueError(f"{flag} must be between 0 and {count - 1} (the model has {count} {what}), got {value}")
    token_ids = tokenizer(args.prompt).input_ids
    if len(token_ids) > config.max_position_embeddings:
        raise ValueError(
            f"the prompt has {len(token_ids)} tokens; the model's context holds {config.max_position_embeddings}"
        )
    found = look_inside(model, torch.tensor([token_ids], device=model.device))
    record = inspection_record(args.prompt, token_ids, found, tokenizer, args.top_k)
    layers = [args.layer] if args.layer is not None else list(range(config.num_hidden_layers))
    heads = [args.head] if args.head is not None else list(range(config.num_attention_heads))
    lens_tokens = [[item["token"] for item in row] for row in record["logit_lens"]]
    files = {
        "attention.png": png_bytes(plot_attention(found["attentions"], record["tokens"], layers, heads)),
        "logit_lens.png": png_bytes(plot_logit_lens(lens_tokens, found["lens_probs"], record["tokens"])),
        "next_token.png": png_bytes(plot_next_token(record["next_token"], args.prompt)),
        "inspection.json": json.dumps(record, ensure_ascii=False).encode("utf-8"),
    }
    write_outputs(out_dir, files)
    return record


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_logs()
    try:
        record = run_inspection(args)
    except (UsageError, ValueError, OSError, RuntimeError) as error:
        return report(error)
    print(summary(record))
    print(f"Wrote {', '.join(OUTPUT_FILES)} to {args.out}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
