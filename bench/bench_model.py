"""Benchmark gpt2edu against transformers' GPT2LMHeadModel: training steps and greedy generation, side by side.

Both models get the same weights (mapped with convert_checkpoint's functions, then checked to give the same logits,
loss and gradients), the same inputs and the same AdamW settings, in the same process. Each round times every
measurement of both models back to back, in alternating order, and the table reports medians over rounds. Absolute
speeds drift on a shared machine; the ratios, measured side by side, are the figures to compare. After the table,
a breakdown of one batch-1 decoding step (generate(), the model's forward, its output head, transformers' loop) shows
where generation time goes.

    python bench/bench_model.py                                   # CPU, tiny config (4 layers, 256 wide)
    python bench/bench_model.py --compile                         # also torch.compile'd training and generation
    python bench/bench_model.py --device cuda --size 124m --dtype bf16

Prints a table and writes every round's figures as JSON (--out).
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
import transformers
from transformers import CompileConfig, GPT2LMHeadModel

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from machine import cpu_model  # noqa: E402

from configuration_gpt2edu import GPT2EduConfig  # noqa: E402
from convert_checkpoint import gpt2edu_config_to_gpt2, gpt2edu_to_gpt2_state_dict  # noqa: E402
from modeling_gpt2edu import GPT2EduForCausalLM  # noqa: E402

# Model sizes and the training batch each is measured with (batch, sequence length).
SIZES = {
    "tiny": (dict(context_length=256, emb_dim=256, n_heads=4, n_layers=4), (4, 256)),
    "124m": (dict(context_length=1024, emb_dim=768, n_heads=12, n_layers=12), (8, 1024)),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny", help="model size (default: tiny)")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="bf16 runs under autocast")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch CPU threads (default: all cores)")
    parser.add_argument("--rounds", type=int, default=5, help="alternated A/B rounds per measurement (default: 5)")
    parser.add_argument("--train-steps", type=int, default=3, help="training steps timed per round (default: 3)")
    parser.add_argument("--batch", type=int, default=None, help="training batch size (default: 4 tiny, 8 124m)")
    parser.add_argument("--seq-len", type=int, default=None, help="training sequence length (default: context)")
    parser.add_argument("--drop-rate", type=float, default=0.1, help="dropout while training (default: GPT-2's 0.1)")
    parser.add_argument("--vocab-size", type=int, default=50257, help="vocabulary size (default: GPT-2's 50257)")
    parser.add_argument("--prompt-len", type=int, default=64, help="generation prompt length (default: 64)")
    parser.add_argument("--new-tokens", type=int, default=128, help="tokens generated per call (default: 128)")
    parser.add_argument("--gen-batches", default="1,8", help="generation batch sizes, comma-separated (default: 1,8)")
    parser.add_argument("--seed-rounds", type=int, default=3, help="rounds for the no-cache seed loop (0 skips it)")
    parser.add_argument("--skip-train", action="store_true", help="measure generation only")
    parser.add_argument("--skip-generate", action="store_true", help="measure training only")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also measure torch.compile'd training and a "
        "compiled static-cache generate() (compiling takes minutes on a small CPU)",
    )
    parser.add_argument("--out", default=None, help="JSON path (default: bench/results_model_<device>_<size>.json)")
    args = parser.parse_args(argv)

    args.device = torch.device(args.device)
    if args.device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible to torch; run on a GPU machine or use --device cpu")
    for name in ("threads", "rounds", "train_steps", "prompt_len", "new_tokens", "vocab_size"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    try:
        args.gen_batches = [int(b) for b in args.gen_batches.split(",")]
    except ValueError:
        parser.error(f"--gen-batches takes comma-separated integers such as 1,8, got {args.gen_batches!r}")
    if min(args.gen_batches) <= 0:
        parser.error(f"--gen-batches must be positive, got {args.gen_batches}")
    dims, (batch, seq_len) = SIZES[args.size]
    args.batch = args.batch or batch
    args.seq_len = args.seq_len or seq_len
    if args.seq_len > dims["context_length"] or args.prompt_len + args.new_tokens > dims["context_length"]:
        parser.error(f"--seq-len and --prompt-len + --new-tokens must fit the context of {dims['context_length']}")
    args.out = Path(args.out or ROOT / "bench" / f"results_model_{args.device.type}_{args.size}.json")
    return args


def build_models(args: argparse.Namespace) -> tuple[GPT2EduForCausalLM, GPT2LMHeadModel]:
    """gpt2edu in GPT-2's layout (qkv biases, tied head) and a GPT2LMHeadModel holding the very same weights."""
    torch.manual_seed(0)
    config = GPT2EduConfig(
        **SIZES[args.size][0],
        vocab_size=args.vocab_size,
        drop_rate=args.drop_rate,
        qkv_bias=True,
        tie_word_embeddings=True,
        bos_token_id=args.vocab_size - 1,  # <|endoftext|> is GPT-2's last token
        eos_token_id=args.vocab_size - 1,
    )
    ours = GPT2EduForCausalLM(config)
    theirs = GPT2LMHeadModel(gpt2edu_config_to_gpt2(config))
    theirs.load_state_dict(gpt2edu_to_gpt2_state_dict(ours.state_dict(), config.n_layers), strict=True)
    for model in (ours, theirs):
        model.generation_config.eos_token_id = None  # every call generates exactly --new-tokens
        model.generation_config.pad_token_id = config.vocab_size - 1  # never in the prompts
        model.to(args.device)
    check_same_function(ours, theirs, args.device)
    return ours, theirs


def check_same_function(ours: GPT2EduForCausalLM, theirs: GPT2LMHeadModel, device: torch.device) -> None:
    """Raise unless both models give the same logits, the same loss and the same gradient for every weight."""
    input_ids = torch.randint(0, ours.config.vocab_size, (2, 64), device=device)
    ours.eval(), theirs.eval()  # no dropout, so that both draw nothing at random
    outputs = {side: model(input_ids, labels=input_ids) for side, model in (("ours", ours), ("theirs", theirs))}
    atol = 1e-3 if device.type == "cuda" else 1e-4  # GPU attention kernels round differently from one another
    torch.testing.assert_close(outputs["ours"].logits, outputs["theirs"].logits, atol=atol, rtol=atol)
    torch.testing.assert_close(outputs["ours"].loss, outputs["theirs"].loss, atol=atol / 10, rtol=atol / 10)
    for output in outputs.values():
        output.loss.backward()
    our_grads = {name: param.grad for name, param in ours.state_dict(keep_vars=True).items()}
    our_grads = gpt2edu_to_gpt2_state_dict(our_grads, ours.config.n_layers)
    for name, param in theirs.state_dict(keep_vars=True).items():
        try:
            torch.testing.assert_close(our_grads[name], param.grad, atol=atol / 10, rtol=1e-3)
        except AssertionError as error:
            raise AssertionError(f"gradient of {name} differs: {error}") from None
    ours.zero_grad(set_to_none=True), theirs.zero_grad(set_to_none=True)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_train_job(model, batch: dict[str, torch.Tensor], steps: int, args: argparse.Namespace, forward=None):
    """A callable that runs `steps` training steps (forward, backward, AdamW) and returns the seconds they took."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, betas=(0.9, 0.95))
    forward = model if forward is None else forward
    autocast = torch.autocast(args.device.type, dtype=torch.bfloat16) if args.dtype == "bf16" else nullcontext()

    def job() -> float:
        model.train()
        synchronize(args.device)
        start = time.perf_counter()
        for _ in range(steps):
            with autocast:
                loss = forward(**batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        synchronize(args.device)
        return time.perf_counter() - start

    return job


def make_generate_job(model, prompt: torch.Tensor, args: argparse.Namespace, **generate_kwargs):
    """A callable that runs one greedy generate() of --new-tokens tokens and returns the seconds it took."""
    autocast = torch.autocast(args.device.type, dtype=torch.bfloat16) if args.dtype == "bf16" else nullcontext()
    attention_mask = torch.ones_like(prompt)  # what a tokenizer hands over
    kwargs = dict(max_new_tokens=args.new_tokens, do_sample=False, **generate_kwargs)

    def job() -> float:
        model.eval()
        synchronize(args.device)
        start = time.perf_counter()
        with torch.no_grad(), autocast:
            output = model.generate(prompt, attention_mask=attention_mask, **kwargs)
        synchronize(args.device)
        job.output = output
        return time.perf_counter() - start

    return job


def make_seed_loop_job(model, prompt: torch.Tensor, args: argparse.Namespace):
    """The seed's generate_text_simple: no cache, the whole sequence recomputed for every new token."""
    autocast = torch.autocast(args.device.type, dtype=torch.bfloat16) if args.dtype == "bf16" else nullcontext()

    def job() -> float:
        model.eval()
        input_ids = prompt
        synchronize(args.device)
        start = time.perf_counter()
        for _ in range(args.new_tokens):
            with torch.no_grad(), autocast:
                logits = model(input_ids, use_cache=False).logits[:, -1, :]
            input_ids = torch.cat([input_ids, logits.argmax(dim=-1, keepdim=True)], dim=1)
        synchronize(args.device)
        job.output = input_ids
        return time.perf_counter() - start

    return job


def alternate(jobs: dict[str, Callable], rounds: int) -> dict[str, list[float]]:
    """Run every job once to warm up, then `rounds` times each, back to back, reversing the order every round."""
    for job in jobs.values():
        job()
    seconds = {name: [] for name in jobs}
    names = list(jobs)
    for round_index in range(rounds):
        for name in names if round_index % 2 == 0 else reversed(names):
            seconds[name].append(jobs[name]())
    return seconds


def compare(name: str, seconds: dict[str, list[float]], work: float, unit: str, a: str = "ours", b: str = "theirs"):
    """One table row: the median rate of each side and the median of the per-round ratios (a's rate over b's)."""
    rates = {side: [work / s for s in seconds[side]] for side in (a, b)}
    ratios = [ra / rb for ra, rb in zip(rates[a], rates[b], strict=True)]
    return dict(
        name=name,
        unit=unit,
        a=a,
        b=b,
        a_rate=statistics.median(rates[a]),
        b_rate=statistics.median(rates[b]),
        ratio=statistics.median(ratios),
        ratio_rounds=ratios,
        seconds=seconds,
    )


def bench_training(ours, theirs, args) -> list[dict]:
    torch.manual_seed(1)
    input_ids = torch.randint(0, ours.config.vocab_size, (args.batch, args.seq_len), device=args.device)
    batch = dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), labels=input_ids)  # as run_clm
    tokens = args.train_steps * input_ids.numel()
    sides = (("ours", ours), ("theirs", theirs))
    jobs = {side: make_train_job(model, batch, args.train_steps, args) for side, model in sides}
    rows = [compare(f"train step, batch {args.batch}x{args.seq_len}", alternate(jobs, args.rounds), tokens, "tok/s")]
    if args.compile:
        # torch.compile is lazy: the first call of each job compiles, inside compiled_row.
        compiled = {
            side: make_train_job(model, batch, args.train_steps, args, forward=torch.compile(model))
            for side, model in sides
        }
        rows.append(compiled_row("train step, torch.compile", compiled, args.rounds, tokens, "tok/s"))
    return rows


def bench_generation(ours, theirs, args) -> list[dict]:
    rows = []
    sides = (("ours", ours), ("theirs", theirs))
    if args.device.type == "cuda":
        compile_config = CompileConfig()  # transformers' default for GPUs: CUDA graphs ("reduce-overhead")
    else:
        compile_config = CompileConfig(mode="default")
        compile_config._compile_all_devices = True  # generate() compiles on CPU only when asked to this way
    torch.manual_seed(2)
    for gen_batch in args.gen_batches:
        prompt = torch.randint(0, ours.config.vocab_size - 1, (gen_batch, args.prompt_len), device=args.device)
        work = gen_batch * args.new_tokens
        jobs = {side: make_generate_job(model, prompt, args) for side, model in sides}
        row = compare(f"generate, batch {gen_batch}", alternate(jobs, args.rounds), work, "new tok/s")
        rows.append(dict(row, same_tokens=torch.equal(jobs["ours"].output, jobs["theirs"].output)))
        seed_loop = make_seed_loop_job(ours, prompt, args) if gen_batch == 1 and args.seed_rounds > 0 else None
        if seed_loop:
            rows.append(seed_loop_row("generate", jobs["ours"], seed_loop, work, args))
        if args.compile:
            # transformers compiles the decoding steps of a generate() with a static (fixed-shape) cache.
            static = dict(cache_implementation="static", compile_config=compile_config)
            compiled = {side: make_generate_job(model, prompt, args, **static) for side, model in sides}
            name = f"generate, static cache + compile, batch {gen_batch}"
            rows.append(compiled_row(name, compiled, args.rounds, work, "new tok/s"))
            if seed_loop and "error" not in rows[-1]:
                rows.append(seed_loop_row("generate, static cache + compile", compiled["ours"], seed_loop, work, args))
    return rows


def seed_loop_row(name: str, ours: Callable, seed_loop: Callable, work: float, args: argparse.Namespace) -> dict:
    """Our generate() job against the seed's no-cache loop on the same prompt: rates, ratio, and same tokens?"""
    jobs = {"ours": ours, "seed loop": seed_loop}
    row = compare(f"{name} vs seed's no-cache loop, batch 1", alternate(jobs, args.seed_rounds), work, "new tok/s",
                  b="seed loop")  # fmt: skip
    return dict(row, same_tokens=torch.equal(ours.output, seed_loop.output))


def timed_ms(function: Callable, repeats: int, device: torch.device) -> float:
    """Milliseconds per call of `function`, over `repeats` calls."""
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        function()
    synchronize(device)
    return (time.perf_counter() - start) / repeats * 1e3


def decode_breakdown(ours, theirs, args) -> dict:
    """Where a greedy decoding step at batch 1 spends its time: milliseconds per new token, for both models.

    - generate(): a whole step as generate() runs it: (time of --new-tokens tokens - time of 1) / (--new-tokens - 1);
    - forward: the model alone, one new token against a cache holding the prompt;
    - output head: the (1 x emb_dim) @ (emb_dim x vocab_size) matmul inside it, the same work in both models;
    - generate loop: generate() - forward, transformers' own loop: inputs, the logits' copy, argmax.
    Each round measures all four back to back; the figures are medians over rounds.
    """
    torch.manual_seed(3)
    prompt = torch.randint(0, ours.config.vocab_size - 1, (1, args.prompt_len), device=args.device)
    autocast = torch.autocast(args.device.type, dtype=torch.bfloat16) if args.dtype == "bf16" else nullcontext()
    with autocast:
        return {side: decode_step_ms(model, prompt, args) for side, model in (("ours", ours), ("theirs", theirs))}


@torch.no_grad()
def decode_step_ms(model, prompt: torch.Tensor, args: argparse.Namespace) -> dict:
    model.eval()
    attention_mask = torch.ones(1, prompt.shape[1] + 1, dtype=torch.long, device=args.device)

    def generate(new_tokens: int):
        model.generate(prompt, attention_mask=attention_mask[:, :-1], max_new_tokens=new_tokens, do_sample=False)

    cache = model(prompt, use_cache=True).cache

    def forward_one_token():
        model(prompt[:, -1:], attention_mask=attention_mask, cache=cache, logits_to_keep=1)
        cache.crop(-1)  # back to the prompt alone

    hidden = torch.randn(1, 1, model.config.hidden_size, device=args.device)  # emb_dim in ours, n_embd in GPT-2's
    head_weight = model.get_output_embeddings().weight
    rounds = []
    for round_index in range(max(5, args.rounds) + 1):  # the first round warms up
        first, whole = (timed_ms(lambda n=n: generate(n), 1, args.device) for n in (1, args.new_tokens))
        step = dict(
            generate=(whole - first) / (args.new_tokens - 1),
            forward=timed_ms(forward_one_token, 50, args.device),
            output_head=timed_ms(lambda: F.linear(hidden, head_weight), 50, args.device),
        )
        if round_index > 0:
            rounds.append(dict(step, generate_loop=step["generate"] - step["forward"]))
    return {key: statistics.median(step[key] for step in rounds) for key in rounds[0]}


def print_breakdown(figures: dict) -> None:
    print(f"\n{'batch-1 greedy decoding, ms per new token':<46} {'gpt2edu':>8} {'GPT2LMHeadModel':>16}")
    labels = {
        "generate": "generate(), a whole step",
        "forward": "  the model's forward (one token, cached)",
        "output_head": "    of which the output head's matmul",
        "generate_loop": "  transformers' generate loop (the rest)",
    }
    for key, label in labels.items():
        print(f"{label:<46} {figures['ours'][key]:>8.2f} {figures['theirs'][key]:>16.2f}")


def compiled_row(name: str, jobs: dict[str, Callable], rounds: int, work: float, unit: str) -> dict:
    """Compile both sides (timing the first call, which compiles), then compare them; a failure becomes the row."""
    try:
        compile_seconds = {side: job() for side, job in jobs.items()}
        row = compare(name, alternate(jobs, rounds), work, unit)
    except Exception as error:  # compilation depends on the machine's compiler and torch build: report, go on
        print(f"{name}: failed: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
        return dict(name=name, unit=unit, error=f"{type(error).__name__}: {error}")
    same_tokens = torch.equal(jobs["ours"].output, jobs["theirs"].output) if hasattr(jobs["ours"], "output") else None
    return dict(row, compile_seconds=compile_seconds, same_tokens=same_tokens)


def machine_description(args) -> dict:
    return dict(
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        cpu=cpu_model(),
        cpu_count=os.cpu_count(),
        torch_threads=torch.get_num_threads(),
        python=platform.python_version(),
        torch=torch.__version__,
        transformers=transformers.__version__,
        gpu=torch.cuda.get_device_name(args.device) if args.device.type == "cuda" else None,
    )


def print_table(rows: list[dict]) -> None:
    width = max(len(row["name"]) for row in rows)
    print(f"{'measurement':<{width}} {'gpt2edu':>10} {'other':>10} {'ratio':>7}  other is")
    for row in rows:
        if "error" in row:
            print(f"{row['name']:<{width}} {'failed':>10} {'':>10} {'':>7}  {row['error'].splitlines()[0][:60]}")
            continue
        other = "GPT2LMHeadModel" if row["b"] == "theirs" else row["b"]
        print(
            f"{row['name']:<{width}} {row['a_rate']:>10,.1f} {row['b_rate']:>10,.1f} {row['ratio']:>6.2f}x  "
            f"{other} ({row['unit']})"
        )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()  # other work on the machine: it slows both sides, and multithreaded runs erratically
    ours, theirs = build_models(args)
    meta = machine_description(args)
    print(
        f"{meta['cpu']}, {meta['torch_threads']} threads, torch {meta['torch']}, transformers "
        f"{meta['transformers']}, {args.device}, {args.size}, {args.dtype}; same logits, loss and gradients: yes"
    )
    rows = []
    if not args.skip_train:
        rows += bench_training(ours, theirs, args)
        ours, theirs = build_models(args)  # training moved the two apart (dropout draws differ): start again
    breakdown = None
    if not args.skip_generate:
        rows += bench_generation(ours, theirs, args)
        breakdown = decode_breakdown(ours, theirs, args)
    print_table(rows)
    if breakdown:
        print_breakdown(breakdown)
    meta.update(load_average_before=load_before, load_average_after=os.getloadavg())
    print(f"load average (1, 5, 15 min) before: {load_before}, after: {meta['load_average_after']}")
    settings = {
        key: str(value) if isinstance(value, (Path, torch.device)) else value for key, value in vars(args).items()
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    results = dict(meta=meta, settings=settings, rows=rows, decode_breakdown=breakdown)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
