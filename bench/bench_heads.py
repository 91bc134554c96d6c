"""Benchmark gpt2edu's sequence classifier against transformers' GPT2ForSequenceClassification, side by side.

Both models get the same weights (the body mapped with convert_checkpoint's functions, `score` copied; then checked
to give the same logits, loss and gradients), the same right-padded batch with its labels, in the same process. Each
round times one forward and backward pass of each model back to back, in alternating order; the figure is the median
over rounds of each round's ratio (the two passes of a round see the same load on a shared machine), beside the
median times. Absolute speeds drift on a shared machine; the ratio, measured side by side, is the figure to compare.

    python bench/bench_heads.py                      # CPU, tiny config (4 layers, 256 wide), batch 8 x 128
    python bench/bench_heads.py --size 124m --batch 8 --seq-len 256
    python bench/bench_heads.py --threads 1 --clock cpu  # on a busy machine: this process's CPU time, one thread

Prints a table and writes every round's figures as JSON (--out).
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import GPT2ForSequenceClassification

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from machine import environment  # noqa: E402

from configuration_gpt2edu import GPT2EduConfig  # noqa: E402
from convert_checkpoint import gpt2edu_config_to_gpt2, gpt2edu_to_gpt2_state_dict  # noqa: E402
from modeling_gpt2edu import GPT2EduForCausalLM, GPT2EduForSequenceClassification  # noqa: E402

SIZES = {
    "tiny": dict(context_length=256, emb_dim=256, n_heads=4, n_layers=4),
    "124m": dict(context_length=1024, emb_dim=768, n_heads=12, n_layers=12),
}
PAD = 50256  # the book pads with <|endoftext|>


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny", help="model size (default: tiny)")
    parser.add_argument("--batch", type=int, default=8, help="texts per batch (default: 8, the book's)")
    parser.add_argument("--seq-len", type=int, default=128, help="padded length of the batch (default: 128)")
    parser.add_argument("--num-labels", type=int, default=2, help="classes (default: 2, the book's ham/spam)")
    parser.add_argument("--drop-rate", type=float, default=0.0, help="dropout (default: 0.0, the book's chapter 6)")
    parser.add_argument("--rounds", type=int, default=30, help="alternated A/B rounds (default: 30)")
    parser.add_argument("--steps", type=int, default=1, help="forward+backward passes timed per round (default: 1)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch CPU threads (default: all cores)")
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="wall: elapsed time; cpu: this process's CPU time, less disturbed by other work (default: wall)",
    )
    parser.add_argument("--out", default=str(ROOT / "bench" / "results_heads.json"), help="JSON path")
    args = parser.parse_args(argv)
    for name in ("batch", "seq_len", "num_labels", "rounds", "steps", "threads"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.seq_len > SIZES[args.size]["context_length"]:
        parser.error(f"--seq-len {args.seq_len} is longer than the {args.size} model's context")
    return args


def build_models(args: argparse.Namespace):
    """gpt2edu's classifier and transformers' GPT-2 classifier with the same weights, in training mode."""
    torch.manual_seed(0)
    config = GPT2EduConfig(
        **SIZES[args.size], drop_rate=args.drop_rate, qkv_bias=True, num_labels=args.num_labels, pad_token_id=PAD
    )
    ours = GPT2EduForSequenceClassification(config)
    gpt2_config = gpt2edu_config_to_gpt2(config)
    gpt2_config.num_labels, gpt2_config.pad_token_id = args.num_labels, PAD
    theirs = GPT2ForSequenceClassification(gpt2_config)
    causal_lm = GPT2EduForCausalLM(config)  # the converter's table maps a language model: lend it our body
    causal_lm.model.load_state_dict(ours.model.state_dict())
    gpt2 = gpt2edu_to_gpt2_state_dict(causal_lm.state_dict(), config.n_layers)
    gpt2 = {name: tensor for name, tensor in gpt2.items() if name.startswith("transformer.")}
    theirs.load_state_dict({**gpt2, "score.weight": ours.score.weight.detach().clone()}, strict=False)
    return ours.train(), theirs.train()


def make_batch(args: argparse.Namespace) -> dict[str, torch.Tensor]:
    """A right-padded batch, as the book's SpamDataset pads: lengths from a quarter of seq_len to all of it."""
    generator = torch.Generator().manual_seed(0)
    lengths = torch.linspace(args.seq_len // 4, args.seq_len, args.batch).long()
    ids = torch.randint(0, PAD, (args.batch, args.seq_len), generator=generator)
    mask = (torch.arange(args.seq_len)[None] < lengths[:, None]).long()
    labels = torch.randint(0, args.num_labels, (args.batch,), generator=generator)
    return {"input_ids": ids.masked_fill(mask == 0, PAD), "attention_mask": mask, "labels": labels}


def check_same_numbers(ours, theirs, batch: dict[str, torch.Tensor]) -> dict[str, float]:
    """Logits, loss and every gradient agree (dropout off; GPT-2 told the positions gpt2edu derives from the mask)."""
    ours.eval(), theirs.eval()
    positions = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    out_ours, out_theirs = ours(**batch), theirs(**batch, position_ids=positions)
    out_ours.loss.backward(), out_theirs.loss.backward()
    grads_theirs = dict(theirs.named_parameters())
    differences = {
        "logits": (out_ours.logits - out_theirs.logits).abs().max().item(),
        "loss": (out_ours.loss - out_theirs.loss).abs().item(),
        "score_grad": (ours.score.weight.grad - grads_theirs["score.weight"].grad).abs().max().item(),
        "embedding_grad": (ours.model.tok_emb.weight.grad - grads_theirs["transformer.wte.weight"].grad)
        .abs()
        .max()
        .item(),
    }
    ours.zero_grad(set_to_none=True), theirs.zero_grad(set_to_none=True)
    ours.train(), theirs.train()
    if max(differences.values()) > 1e-4:
        raise SystemExit(f"bench_heads.py: error: the two models disagree: {differences}")
    return differences


def time_steps(model, batch: dict[str, torch.Tensor], steps: int, clock=time.perf_counter) -> float:
    """Seconds per forward+backward pass, over `steps` passes."""
    start = clock()
    for _ in range(steps):
        model(**batch).loss.backward()
        model.zero_grad(set_to_none=True)
    return (clock() - start) / steps


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    ours, theirs = build_models(args)
    batch = make_batch(args)
    differences = check_same_numbers(ours, theirs, batch)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    for model in (ours, theirs):  # warm-up
        time_steps(model, batch, 1)
    rounds = []
    for round_index in range(args.rounds):
        order = [("gpt2edu", ours), ("gpt2", theirs)]
        if round_index % 2:
            order.reverse()
        rounds.append({name: time_steps(model, batch, args.steps, clock) for name, model in order})
    median = {name: statistics.median(r[name] for r in rounds) for name in ("gpt2edu", "gpt2")}
    tokens = args.batch * args.seq_len
    ratio = statistics.median(r["gpt2"] / r["gpt2edu"] for r in rounds)
    print(
        f"forward+backward, batch {args.batch}x{args.seq_len}, {args.size}, {args.threads} threads, {args.clock} time:"
    )
    print(f"  gpt2edu  {tokens / median['gpt2edu']:10,.0f} tok/s")
    print(f"  GPT-2    {tokens / median['gpt2']:10,.0f} tok/s")
    print(f"  ratio    {ratio:10.2f}x (gpt2edu's speed / GPT2ForSequenceClassification's, median of the rounds)")
    result = {
        "environment": environment("torch", "transformers"),
        "args": {key: value for key, value in vars(args).items() if key != "out"},
        "max_abs_differences": differences,
        "seconds_per_step": rounds,
        "median_seconds_per_step": median,
        "tokens_per_second": {name: tokens / seconds for name, seconds in median.items()},
        "ratio": ratio,
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
