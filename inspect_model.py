"""Look inside a GPT-2: attention maps, the logit lens, the next-token probabilities and the residual stream, as
pictures, as JSON and as one page that opens in a browser from disk.

    python inspect_model.py --model gpt2edu-out --prompt "Every effort moves you" --out inspect-out --generate 20

--model is a gpt2edu folder, a transformers GPT-2 folder or a Hub id (offline: one in the local Hub cache). --out gets
attention.png, logit_lens.png, next_token.png, inspection.json and look_inside.html, all of them or none
(--no-page leaves the page out). --generate N continues the prompt N tokens with generate(), greedy unless
--do-sample; the page walks through the steps.
"""

import argparse
import base64
import hashlib
import io
import json
import os
import re
import sys
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from huggingface_hub import constants as hub_constants
from matplotlib import colormaps
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from transformers import PreTrainedModel, set_seed

from gpt2edu.cli import EXIT_OK, OneLineErrorParser, UsageError, quiet_logs, report
from gpt2edu.files import atomic_write, check_output_dir
from gpt2edu.loading import get_device, load_model_and_tokenizer, looks_like_hub_id

OUTPUT_FILES = ("attention.png", "logit_lens.png", "next_token.png", "inspection.json", "look_inside.html")
# Where each model type keeps its parts: (the body, its blocks, a block's attention, a block's MLP, the final norm).
PARTS = {
    "gpt2edu": ("model", "trf_blocks", "att", "ff", "final_norm"),
    "gpt2": ("transformer", "h", "attn", "mlp", "ln_f"),
}
# The page holds at most this many tokens (prompt plus generation): its attention grows with their square, and a
# 124M model (12 x 12 maps) at 128 tokens is about 1.2 million weights, most of the page's ~4 MB.
PAGE_MAX_TOKENS = 128
ATTENTION_SCALE = 1000  # the page's attention weights are whole thousandths, each row summing to exactly 1000
LENS_TOP = 5  # the logit lens keeps each cell's 5 likeliest tokens (the page shows them on hover)


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


def parts_of(model: PreTrainedModel) -> tuple[list[torch.nn.Module], list, list, torch.nn.Module]:
    """The blocks, each block's attention and MLP, and the final LayerNorm, found by the model type (`PARTS`).

    Raises:
        ValueError: For a model without attention weights to show, or one that is not a gpt2edu or GPT-2 model.
    """
    config = model.config
    if config.model_type not in PARTS:
        if not getattr(config, "num_attention_heads", None):
            raise ValueError(
                f"{type(model).__name__} has no attention weights to show (a {config.model_type} model has no "
                "attention heads); pass a gpt2edu or GPT-2 model"
            )
        raise ValueError(
            f"{type(model).__name__} is not a GPT-2: this program finds the blocks, attention and MLP of gpt2edu "
            "and GPT-2 models only"
        )
    body, blocks, attention, mlp, final_norm = PARTS[config.model_type]
    body = getattr(model, body)
    blocks = list(getattr(body, blocks))
    return (
        blocks,
        [getattr(b, attention) for b in blocks],
        [getattr(b, mlp) for b in blocks],
        getattr(body, final_norm),
    )


@torch.no_grad()
def look_inside(model: PreTrainedModel, input_ids: torch.Tensor, lens_top: int = LENS_TOP) -> dict[str, torch.Tensor]:
    """Run one text and collect its attention weights, the logit lens, the logits and the residual stream.

    Args:
        model: A gpt2edu or GPT-2 causal LM in eval mode with eager attention.
        input_ids: The text's token ids, shape (1, seq).
        lens_top: How many of the likeliest tokens the logit lens keeps at each layer and position.

    Returns:
        On the CPU, in float32: "attentions" (n_layers, n_heads, seq, seq), softmax weights of each query (row) over
        the keys (columns); "lens_ids" and "lens_probs" (n_layers + 1, seq), the token each layer would predict at each
        position and its probability (row 0: the embeddings, row i: block i - 1's output), and "lens_top_ids" and
        "lens_top_probs" (n_layers + 1, seq, lens_top), its likeliest tokens; "logits" (seq, vocab_size) and
        "next_probs" (vocab_size,), the model's own next-token distribution after the text; the residual stream's
        norms: "stream_norms" (n_layers + 1, seq), the stream entering the first block then leaving each block, and
        "attention_norms" and "mlp_norms" (n_layers, seq), what each block's attention and MLP add to it.
    """
    blocks, attentions, mlps, norm = parts_of(model)
    added = {"stream": [], "attention": [], "mlp": []}

    def keep(key: str):
        def hook(module, args, output):  # a module returns a tensor, or a tuple whose first item is the tensor
            added[key].append((output[0] if isinstance(output, tuple) else output)[0])  # (seq, emb_dim)

        return hook

    hooks = [block.register_forward_hook(keep("stream")) for block in blocks]
    hooks += [module.register_forward_hook(keep("attention")) for module in attentions]
    hooks += [module.register_forward_hook(keep("mlp")) for module in mlps]
    try:
        output = model(
            input_ids,
            attention_mask=torch.ones_like(input_ids),
            output_attentions=True,
            output_hidden_states=True,
        )
    finally:
        for hook in hooks:
            hook.remove()
    if not output.attentions or any(weights is None for weights in output.attentions):
        raise ValueError(f"{type(model).__name__} returned no attention weights; pass a gpt2edu or GPT-2 model")
    head = model.get_output_embeddings()
    *inner, last = output.hidden_states  # n_layers + 1 states; the last one has been through the final norm already
    lens_top_ids, lens_top_probs = [], []
    for hidden in [norm(h) for h in inner] + [last]:
        probs, ids = head(hidden[0]).float().softmax(dim=-1).topk(lens_top, dim=-1)  # (seq, lens_top) each
        lens_top_ids.append(ids)
        lens_top_probs.append(probs)
    lens_top_ids, lens_top_probs = torch.stack(lens_top_ids).cpu(), torch.stack(lens_top_probs).cpu()
    logits = output.logits[0].float().cpu()
    stream = [output.hidden_states[0][0]] + added["stream"]  # the embeddings, then each block's output
    return {
        "attentions": torch.stack(output.attentions, dim=1)[0].float().cpu(),  # (n_layers, n_heads, seq, seq)
        "lens_ids": lens_top_ids[..., 0],
        "lens_probs": lens_top_probs[..., 0],
        "lens_top_ids": lens_top_ids,
        "lens_top_probs": lens_top_probs,
        "logits": logits,
        "next_probs": logits[-1].softmax(dim=-1),
        "stream_norms": torch.stack(stream).float().norm(dim=-1).cpu(),
        "attention_norms": torch.stack(added["attention"]).float().norm(dim=-1).cpu(),
        "mlp_norms": torch.stack(added["mlp"]).float().norm(dim=-1).cpu(),
    }


@torch.no_grad()
def generate_steps(
    model: PreTrainedModel, input_ids: torch.Tensor, new_tokens: int, do_sample: bool, seed: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Continue the prompt with transformers' generate(), greedy or sampled, and keep what each step drew from.

    Sampling draws from the model's own distribution: temperature 1, no top-k, no top-p (given explicitly, so that
    generate()'s default top_k=50 does not apply unasked). Generation stops early at the end-of-text token.

    Returns:
        The prompt and the new tokens (prompt + steps,), and each step's probabilities (steps, vocab_size): the
        softmax of the scores generate() chose from.
    """
    if seed is not None:
        set_seed(seed)
    sampling = dict(temperature=1.0, top_k=0, top_p=1.0) if do_sample else {}
    pad_token_id = model.generation_config.pad_token_id  # HF: GPT-2 has none; generate() wants one
    if pad_token_id is None:
        pad_token_id = model.generation_config.eos_token_id
    output = model.generate(
        input_ids,
        attention_mask=torch.ones_like(input_ids),
        max_new_tokens=new_tokens,
        do_sample=do_sample,
        pad_token_id=pad_token_id,
        return_dict_in_generate=True,
        output_scores=True,
        **sampling,
    )
    step_probs = torch.stack(output.scores, dim=1)[0].float().softmax(dim=-1)  # (steps, vocab_size)
    return output.sequences[0].cpu(), step_probs.cpu()


def attention_thousandths(attentions: torch.Tensor) -> list:
    """Attention weights as whole thousandths, [layer][head][query] -> one number per key up to the query.

    Rounded by the largest remainder: each row's numbers sum to exactly 1000, and each is within one thousandth of
    the model's weight. The future keys (always 0 under the causal mask) are left out.
    """
    scaled = attentions.double() * ATTENTION_SCALE  # (n_layers, n_heads, seq, seq)
    floors = scaled.floor()
    seq = scaled.shape[-1]
    future = torch.ones(seq, seq, dtype=torch.bool).triu(diagonal=1)
    remainders = (scaled - floors).masked_fill(future, -1.0)
    missing = ATTENTION_SCALE - floors.sum(dim=-1, keepdim=True)  # what the floors leave short of 1000, per row
    rank = remainders.argsort(dim=-1, descending=True).argsort(dim=-1)  # 0 for the largest remainder
    rounded = (floors + (rank < missing).double()).long()
    return [[[row[: query + 1] for query, row in enumerate(head.tolist())] for head in layer] for layer in rounded]


def float32_list(tensor: torch.Tensor) -> list:
    """Nested lists of the shortest decimals that read back as the same float32 values (0.3, not 0.30000001...)."""
    return tensor.numpy().astype(str).astype(np.float64).tolist()


def inspection_record(
    prompt: str,
    token_ids: list[int],
    found: dict[str, torch.Tensor],
    tokenizer,
    top_k: int,
    prompt_length: int | None = None,
    steps: dict | None = None,
    model_info: dict | None = None,
) -> dict:
    """The numbers of the pictures and the page as JSON-ready lists; token strings are each id decoded on its own.

    `token_ids` and `found` cover the whole text: the prompt's first `prompt_length` tokens (all when None), then
    the generated ones. The pictures' fields ("tokens", "attentions", "logit_lens", "next_token") are the prompt's;
    the page's cover the whole text. `steps` holds generate_steps' "probs" and its settings.
    """

    def entry(token_id: int, prob: float) -> dict:
        return {"token_id": token_id, "token": tokenizer.decode([token_id]), "prob": float(str(np.float32(prob)))}

    def top(probs: torch.Tensor) -> list[dict]:
        values, ids = probs.topk(min(top_k, probs.numel()))
        return [entry(i, p) for i, p in zip(ids.tolist(), values.tolist(), strict=True)]

    prompt_length = len(token_ids) if prompt_length is None else prompt_length
    prompt_part = slice(0, prompt_length)
    lens_ids, lens_probs = found["lens_ids"][:, prompt_part], found["lens_probs"][:, prompt_part]
    record = {
        "prompt": prompt,
        "tokens": [tokenizer.decode([token_id]) for token_id in token_ids[prompt_part]],
        "attentions": float32_list(found["attentions"][:, :, prompt_part, prompt_part]),  # [layer][head][query][key]
        "logit_lens": [  # [layer][position]: layer 0 = the embeddings, then each block's output
            [entry(i, p) for i, p in zip(ids.tolist(), probs.tolist(), strict=True)]
            for ids, probs in zip(lens_ids, lens_probs, strict=True)
        ],
        "next_token": top(found["logits"][prompt_length - 1].softmax(dim=-1)),
        # The page's fields, over the whole text (the prompt, then the generated tokens):
        "model": model_info or {},
        "prompt_length": prompt_length,
        "sequence": [tokenizer.decode([token_id]) for token_id in token_ids],
        "sequence_ids": list(token_ids),
        "attention_scale": ATTENTION_SCALE,
        "attention_thousandths": attention_thousandths(found["attentions"]),  # [layer][head][query][key <= query]
        "logit_lens_top": [  # [layer][position][rank]
            [
                [entry(i, p) for i, p in zip(ids, probs, strict=True)]
                for ids, probs in zip(layer_ids.tolist(), layer_probs.tolist(), strict=True)
            ]
            for layer_ids, layer_probs in zip(found["lens_top_ids"], found["lens_top_probs"], strict=True)
        ],
        "next_logits": float32_list(found["logits"][prompt_length - 1]),  # after the prompt, the whole vocabulary
        "residual": {  # vector norms, [layer][position]
            "stream": float32_list(found["stream_norms"]),  # entering block 0 (the embeddings), then after each block
            "attention": float32_list(found["attention_norms"]),  # what each block's attention adds
            "mlp": float32_list(found["mlp_norms"]),  # what each block's MLP adds
        },
        "generation": None,
    }
    if steps is not None:
        new_ids = token_ids[prompt_length:]
        record["generation"] = {
            "asked": steps["asked"],
            "do_sample": steps["do_sample"],
            "seed": steps["seed"],
            "sampling": "the model's own distribution (temperature 1, no top-k, no top-p)"
            if steps["do_sample"]
            else "greedy: the likeliest token",
            "steps": [
                {
                    "position": prompt_length + step,
                    **entry(token_id, probs[token_id].item()),
                    "drawn_from": top(probs),
                }
                for step, (token_id, probs) in enumerate(zip(new_ids, steps["probs"], strict=True))
            ],
        }
    return record


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


def page_html(record: dict) -> bytes:
    """look_inside.html: the page's template (gpt2edu/look_inside/) with its CSS, its JS and the record inlined.

    The page holds the record but not "attentions" (the prompt's float32 weights, as the PNG draws them):
    "attention_thousandths" holds the same weights over the whole text. Its Content-Security-Policy allows the
    inlined script and style (by their SHA-256) and nothing else: no request leaves the page.
    """
    folder = resources.files("gpt2edu") / "look_inside"
    template, css, js = (
        (folder / name).read_text(encoding="utf-8")
        for name in ("look_inside.html", "look_inside.css", "look_inside.js")
    )
    data = {key: value for key, value in record.items() if key != "attentions"}
    # "<" escaped: a "</script>" inside a token cannot end the block; JSON.parse reads \u003c back as "<".
    data_text = json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")

    def sha256(text: str) -> str:
        return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode() + "'"

    policy = (
        f"default-src 'none'; script-src {sha256(js)}; style-src {sha256(css)}; base-uri 'none'; form-action 'none'"
    )
    fill = {"CSP": policy, "CSS": css, "JS": js, "DATA": data_text}
    return re.sub(r"{{(CSP|CSS|JS|DATA)}}", lambda match: fill[match.group(1)], template).encode("utf-8")


def model_info(name: str, model: PreTrainedModel) -> dict:
    """What the page says about the model: its name, type and sizes, read from its config."""
    config = model.config
    return {
        "name": name,
        "label": Path(name).resolve().name if os.path.isdir(name) else name,  # a folder's own name, or the Hub id
        "model_type": config.model_type,
        "n_layers": config.num_hidden_layers,
        "n_heads": config.num_attention_heads,
        "emb_dim": config.hidden_size,
        "context_length": config.max_position_embeddings,
        "vocab_size": model.get_output_embeddings().out_features,
        "n_params": sum(parameter.numel() for parameter in model.parameters()),
    }


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
    """A few lines for the terminal: the top next tokens, each layer's lens guess at the last position, the steps."""
    lines = [f"Prompt: {len(record['tokens'])} tokens: " + " ".join(repr(t) for t in record["tokens"])]
    lines.append("Next token:")
    lines += [f"  {item['prob']:<9.3g}  {item['token']!r}" for item in record["next_token"]]
    lines.append(f"Logit lens at the last position (after {record['tokens'][-1]!r}):")
    for layer, row in enumerate(record["logit_lens"]):
        name = "embeddings" if layer == 0 else f"block {layer - 1}"
        lines.append(f"  {name:<10}  {row[-1]['prob']:<9.3g}  {row[-1]['token']!r}")
    generation = record["generation"]
    if generation:
        steps = generation["steps"]
        seed = "no seed" if generation["seed"] is None else f"seed {generation['seed']}"
        how = f"sampled, {seed}" if generation["do_sample"] else "greedy"
        lines.append(f"Generated {len(steps)} tokens ({how}): " + " ".join(repr(step["token"]) for step in steps))
        if len(steps) < generation["asked"]:
            lines.append(
                f"  (stopped at the end-of-text token, {generation['asked'] - len(steps)} short of --generate)"
            )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = OneLineErrorParser(description="Draw the attention maps, logit lens and next-token probabilities.")
    parser.add_argument("--model", required=True, help="gpt2edu or GPT-2 folder, or Hub id")
    parser.add_argument("--prompt", required=True, help="text to look at")
    parser.add_argument(
        "--out", required=True, help="folder for the PNGs, inspection.json and the page (made if missing)"
    )
    parser.add_argument("--top-k", type=int, default=10, help="next tokens to show (default 10)")
    parser.add_argument("--layer", type=int, default=None, help="draw only this block's attention (0-based)")
    parser.add_argument("--head", type=int, default=None, help="draw only this head's attention (0-based)")
    parser.add_argument("--generate", type=int, default=0, help="continue the prompt N tokens with generate()")
    parser.add_argument("--do-sample", action="store_true", help="sample the new tokens (default: greedy)")
    parser.add_argument("--seed", type=int, default=None, help="random seed for --do-sample (0 to 2**32-1)")
    parser.add_argument(
        "--no-page",
        action="store_true",
        help=f"write no look_inside.html (and lift its limit of {PAGE_MAX_TOKENS} tokens)",
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, mps... (default: the best available)")
    return parser.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    """Refuse what is wrong with the flags alone, before anything is loaded.

    Raises:
        ValueError: Naming the flag and what it takes.
    """
    if not args.prompt.strip():
        raise ValueError("--prompt is empty; pass some text to look at")
    if args.top_k < 1:
        raise ValueError(f"--top-k must be at least 1, got {args.top_k}")
    if args.generate < 0:
        raise ValueError(f"--generate must be 0 or more new tokens, got {args.generate}")
    if not args.no_page and args.generate >= PAGE_MAX_TOKENS:
        raise ValueError(
            f"--generate {args.generate} is past the page's limit: the prompt and the new tokens together may have at "
            f"most {PAGE_MAX_TOKENS}; ask for fewer (or pass --no-page)"
        )
    if args.do_sample and args.generate == 0:
        raise ValueError("--do-sample samples the tokens --generate N adds; pass --generate N too")
    if args.seed is not None and not args.do_sample:
        raise ValueError("--seed seeds the sampling of --do-sample; greedy generation needs no seed")
    if args.seed is not None and not 0 <= args.seed < 2**32:  # numpy's range; set_seed seeds numpy too
        raise ValueError(f"--seed must be between 0 and {2**32 - 1}, got {args.seed}")


def check_prompt_fits(args: argparse.Namespace, token_ids: list[int], model: PreTrainedModel) -> None:
    """Refuse a prompt that tokenizes to nothing, or that with --generate N outgrows the context or the page.

    The page's limit (`PAGE_MAX_TOKENS`) keeps its file a few MB: the attention weights grow with the square of the
    text's length. Past the context, a gpt2edu model would read a sliding window rather than everything before.

    Raises:
        ValueError: Naming the lengths and the fix.
    """
    context, vocab = model.config.max_position_embeddings, model.get_input_embeddings().num_embeddings
    total = len(token_ids) + args.generate
    if not token_ids:
        raise ValueError(
            f"--prompt {args.prompt!r} tokenizes to no tokens with this model's tokenizer; pass other text"
        )
    if max(token_ids) >= vocab:
        raise ValueError(
            f"the prompt has token id {max(token_ids)}, but the model knows only {vocab} tokens; use the tokenizer "
            "the model was trained with"
        )
    if len(token_ids) > context:
        raise ValueError(f"the prompt has {len(token_ids)} tokens; the model's context holds {context}")
    if total > context:
        raise ValueError(
            f"the prompt's {len(token_ids)} tokens and --generate {args.generate} come to {total}; the model's "
            f"context holds {context}: shorten the prompt or generate fewer"
        )
    if total > PAGE_MAX_TOKENS and not args.no_page:
        raise ValueError(
            f"the prompt's {len(token_ids)} tokens and --generate {args.generate} come to {total}; look_inside.html "
            f"holds at most {PAGE_MAX_TOKENS} (its attention grows with the square of the length): shorten the "
            "prompt or generate fewer, or pass --no-page"
        )


def inspect_text(args: argparse.Namespace) -> tuple[dict, dict[str, torch.Tensor]]:
    """Check the arguments, load the model, generate, and look inside: the JSON record and look_inside's tensors.

    Raises:
        ValueError: For bad arguments, a model that cannot be loaded or inspected, or a text that does not fit.
        UsageError: For an --out that cannot be written.
    """
    check_args(args)
    check_out(Path(args.out))
    model, tokenizer = load_for_inspection(args.model, get_device(args.device))
    parts_of(model)  # refuses a model without attention weights, or not a GPT-2, before it runs
    config = model.config
    for flag, value, count, what in (
        ("--layer", args.layer, config.num_hidden_layers, "blocks"),
        ("--head", args.head, config.num_attention_heads, "heads"),
    ):
        if value is not None and not 0 <= value < count:
            raise ValueError(f"{flag} must be between 0 and {count - 1} (the model has {count} {what}), got {value}")
    token_ids = tokenizer(args.prompt).input_ids
    check_prompt_fits(args, token_ids, model)
    prompt_length = len(token_ids)
    steps = None
    if args.generate:
        prompt_ids = torch.tensor([token_ids], device=model.device)
        sequence, probs = generate_steps(model, prompt_ids, args.generate, args.do_sample, args.seed)
        steps = {"asked": args.generate, "do_sample": args.do_sample, "seed": args.seed, "probs": probs}
        token_ids = sequence.tolist()
    found = look_inside(model, torch.tensor([token_ids], device=model.device))
    record = inspection_record(
        args.prompt, token_ids, found, tokenizer, args.top_k, prompt_length, steps, model_info(args.model, model)
    )
    return record, found


def run_inspection(args: argparse.Namespace) -> dict:
    """Inspect the text (`inspect_text`), draw the pictures, and write every file or none; return the JSON record."""
    record, found = inspect_text(args)
    config, prompt_length = record["model"], record["prompt_length"]
    prompt_attentions = found["attentions"][:, :, :prompt_length, :prompt_length]
    layers = [args.layer] if args.layer is not None else list(range(config["n_layers"]))
    heads = [args.head] if args.head is not None else list(range(config["n_heads"]))
    lens_tokens = [[item["token"] for item in row] for row in record["logit_lens"]]
    lens_probs = found["lens_probs"][:, :prompt_length]
    files = {
        "attention.png": png_bytes(plot_attention(prompt_attentions, record["tokens"], layers, heads)),
        "logit_lens.png": png_bytes(plot_logit_lens(lens_tokens, lens_probs, record["tokens"])),
        "next_token.png": png_bytes(plot_next_token(record["next_token"], args.prompt)),
        "inspection.json": json.dumps(record, ensure_ascii=False).encode("utf-8"),
    }
    if not args.no_page:
        files["look_inside.html"] = page_html(record)
    write_outputs(Path(args.out), files)
    return record


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_logs()
    try:
        record = run_inspection(args)
    except (UsageError, ValueError, OSError, RuntimeError) as error:
        return report(error)
    print(summary(record))
    written = [name for name in OUTPUT_FILES if not (args.no_page and name == "look_inside.html")]
    print(f"Wrote {', '.join(written)} to {args.out}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
