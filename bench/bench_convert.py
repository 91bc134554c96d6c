"""Benchmark convert_checkpoint.py on a 124M seed checkpoint: wall time and peak memory against a plain baseline.

A seed checkpoint with random weights is built in a temporary folder (tests/seed_reference.py's GPTModel with
GPT-2 124M's sizes, saved as the seed saves it: `torch.save(model.state_dict(), path)`). Then, in alternating order,
for --rounds rounds, each of these runs as a command of its own:

- converter: `python convert_checkpoint.py SRC OUT` (reads, maps, writes the folder, reads it back to verify);
- baseline: what a user without the converter would do: `torch.load` the state dict, drop the attention-mask
  buffers (not weights), and write the rest with `safetensors.torch.save_file`.

Each command runs under a fresh wrapper process that times it and reads its peak resident memory
(`getrusage(RUSAGE_CHILDREN).ru_maxrss`). Imports count: they are part of what a user waits for. The table reports
medians; MB are 2**20 bytes. A first round, not counted, warms the page cache and fills the converter's tokenizer
cache (a fresh folder of this benchmark's): the table shows that first conversion's ratio apart. Finally one
converter run in a fresh process goes through convert_checkpoint's steps one by one and reports the time and peak
memory after each, to show where the converter's cost lies.

    python bench/bench_convert.py                     # 124M, 3 rounds (~2 minutes, ~2 GB of temporary disk)
    python bench/bench_convert.py --size tiny         # seconds: checks that the benchmark runs

Prints a table and writes every figure as JSON (--out). CPU only.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from machine import environment

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SIZES = {
    "124m": dict(vocab_size=50257, context_length=1024, emb_dim=768, n_heads=12, n_layers=12),
    "tiny": dict(vocab_size=50257, context_length=256, emb_dim=64, n_heads=4, n_layers=2),
}

# Linux carries a process's resident size at fork over into the child's ru_maxrss, even across exec. So this process
# stays small (it never imports torch: the checkpoint is built by a command of its own), and every measured command is
# started by a fresh wrapper.

# Builds the seed checkpoint: argv is the path, the size's fields as JSON, and tests/ (for seed_reference).
BUILD = """
import json, sys
import torch
sys.path.insert(0, sys.argv[3])
from seed_reference import GPTModel, SeedConfig
torch.manual_seed(0)
model = GPTModel(SeedConfig(**json.loads(sys.argv[2]), drop_rate=0.1, qkv_bias=False))
torch.save(model.state_dict(), sys.argv[1])  # as the seed saves its checkpoints
"""

# Runs a command, then prints its wall time and the peak resident memory of the process it started.
WRAPPER = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
result = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
peak_mb = peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, kilobytes on Linux
print(json.dumps({"returncode": result.returncode, "seconds": seconds, "peak_rss_mb": peak_mb,
                  "stderr": result.stderr[-2000:]}))
"""

# What a plain user would do: load, drop the buffers that are not weights, save.
BASELINE = """
import sys
import torch
from safetensors.torch import save_file
state_dict = torch.load(sys.argv[1], map_location="cpu", weights_only=True)
save_file({name: tensor for name, tensor in state_dict.items() if not name.endswith(".att.mask")}, sys.argv[2])
"""

# convert_checkpoint's steps one at a time, as convert() runs them, with the time and peak memory after each.
PHASES = """
import json, resource, sys, time
marks, last = [], [time.perf_counter()]
def mark(step):
    now = time.perf_counter()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)
    marks.append({"step": step, "seconds": now - last[0], "peak_rss_mb": peak_mb})
    last[0] = now
from pathlib import Path
import convert_checkpoint as cc
from gpt2edu import convert_outputs as co
from gpt2edu.files import atomic_write
mark("import convert_checkpoint (torch, transformers)")
source = cc.read_source(Path(sys.argv[1]))
mark("read_source: torch.load (mmap) and rename")
model = cc.build_model(source, "gpt2edu")
mark("build_model: meta model, assign tensors")
card = co.conversion_model_card(source, model, "gpt2edu", "out")
with atomic_write(Path(sys.argv[2])) as tmp:
    model.save_pretrained(tmp)
    mark("model.save_pretrained")
    co.save_gpt2_tokenizer(tmp)
    (tmp / "README.md").write_text(card)
    mark("tokenizer: save_gpt2_tokenizer (cached)")
    co.verify_loaded_model(tmp, model)
    mark("verify_loaded_model: from_pretrained, compare every parameter")
mark("rename into place")
print(json.dumps(marks))
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="124m", help="seed model size (default: 124m)")
    parser.add_argument("--rounds", type=int, default=3, help="alternated converter/baseline rounds (default: 3)")
    parser.add_argument("--no-phases", action="store_true", help="skip the step-by-step converter run")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results_convert.json"), help="JSON path")
    args = parser.parse_args(argv)
    if args.rounds <= 0:
        parser.error(f"--rounds must be positive, got {args.rounds}")
    return args


def make_seed_checkpoint(path: Path, size: str) -> int:
    """Save a seed GPTModel with random weights as the seed does; return the file's size in bytes."""
    command = [sys.executable, "-c", BUILD, str(path), json.dumps(SIZES[size]), str(ROOT / "tests")]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"building the seed checkpoint failed:\n{result.stderr[-3000:]}")
    return path.stat().st_size


def run_measured(command: list[str]) -> dict:
    """Run `command` under a fresh wrapper process; its wall time and peak resident memory."""
    result = subprocess.run([sys.executable, "-c", WRAPPER, *command], capture_output=True, text=True, cwd=ROOT)
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    if measured["returncode"] != 0:
        raise RuntimeError(f"{' '.join(command[:3])} ... failed:\n{measured['stderr']}")
    return {"seconds": measured["seconds"], "peak_rss_mb": measured["peak_rss_mb"]}


def measure(checkpoint: Path, folder: Path, rounds: int) -> tuple[dict, dict]:
    """Converter and baseline, in alternating order: each round's time and peak memory, and the converter's first run.

    The first round warms the page cache and the imports' files, and the converter's first run fills the tokenizer
    cache (a folder of this benchmark's, empty at the start); it is reported apart, not counted in the medians.
    """
    commands = {
        "converter": lambda out: [sys.executable, str(ROOT / "convert_checkpoint.py"), str(checkpoint), str(out)],
        "baseline": lambda out: [sys.executable, "-c", BASELINE, str(checkpoint), str(out)],
    }
    outputs = {"converter": folder / "converted", "baseline": folder / "baseline.safetensors"}
    runs, first_runs = {name: [] for name in commands}, {}
    for round_index in range(-1, rounds):
        order = list(commands) if round_index % 2 == 0 else list(reversed(commands))
        for name in order:
            measured = run_measured(commands[name](outputs[name]))
            if round_index >= 0:
                runs[name].append(measured)
            else:
                first_runs[name] = measured
            shutil.rmtree(outputs[name], ignore_errors=True)
            outputs[name].unlink(missing_ok=True)
            print(f"  {name}: {measured['seconds']:.1f} s, peak {measured['peak_rss_mb']:.0f} MB", flush=True)
    return runs, first_runs


def measure_phases(checkpoint: Path, folder: Path) -> list[dict]:
    command = [sys.executable, "-c", PHASES, str(checkpoint), str(folder / "phases")]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)  # cwd: convert_checkpoint imports
    if result.returncode != 0:
        raise RuntimeError(f"the step-by-step converter run failed:\n{result.stderr[-3000:]}")
    shutil.rmtree(folder / "phases", ignore_errors=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def print_table(results: dict) -> None:
    env, file_mb = results["environment"], results["checkpoint_mb"]
    print(f"\n{env['date']}  {env['cpu']} ({env['cpu_count']} CPUs)  python {env['python']}  torch {env['torch']}  "
          f"transformers {env['transformers']}  safetensors {env['safetensors']}")  # fmt: skip
    print(f"load average at start / end: {env['load_average_at_start'][0]:.2f} / {env['load_average_at_end'][0]:.2f}")
    print(f"\nseed checkpoint ({results['size']}): {file_mb:.0f} MB; medians of {results['rounds']} alternated rounds")
    print(f"{'':<12}{'time':>9}{'peak RSS':>11}{'peak / file':>13}")
    for name, row in results["medians"].items():
        peak = row["peak_rss_mb"]
        print(f"{name:<12}{row['seconds']:>7.1f} s{peak:>8.0f} MB{peak / file_mb:>11.2f} x")
    print(f"converter / baseline time: {results['time_ratio']:.2f} x (target <= 1.5)")
    first = results["first_runs"]["converter"]["seconds"] / results["first_runs"]["baseline"]["seconds"]
    print(f"  first run, tokenizer cache still empty (not counted): {first:.2f} x")
    print(f"converter peak RSS / checkpoint file: {results['peak_over_file']:.2f} x (target <= 2)")
    if results.get("phases"):
        print("\nconverter step by step (one run, fresh process)")
        print(f"{'step':<50}{'time':>9}{'peak RSS so far':>17}")
        for phase in results["phases"]:
            print(f"{phase['step']:<50}{phase['seconds']:>7.2f} s{phase['peak_rss_mb']:>14.0f} MB")
    verdict = {name: "met" if met else "MISSED" for name, met in results["targets_met"].items()}
    print(f"\ntargets: time {verdict['time']}, memory {verdict['memory']}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = {"size": args.size, "rounds": args.rounds}
    results["environment"] = environment("torch", "transformers", "safetensors")
    with tempfile.TemporaryDirectory(prefix="bench_convert_") as name:
        folder = Path(name)
        checkpoint = folder / "seed_model.pth"
        print(f"building a {args.size} seed checkpoint ...", flush=True)
        results["checkpoint_mb"] = make_seed_checkpoint(checkpoint, args.size) / 2**20
        os.environ["GPT2EDU_CACHE"] = str(folder / "gpt2edu-cache")  # see measure(); the commands inherit it
        results["runs"], results["first_runs"] = measure(checkpoint, folder, args.rounds)
        results["phases"] = [] if args.no_phases else measure_phases(checkpoint, folder)
    results["environment"]["load_average_at_end"] = os.getloadavg()
    results["medians"] = {
        name: {key: statistics.median(run[key] for run in runs) for key in ("seconds", "peak_rss_mb")}
        for name, runs in results["runs"].items()
    }
    converter, baseline = results["medians"]["converter"], results["medians"]["baseline"]
    results["time_ratio"] = converter["seconds"] / baseline["seconds"]
    results["peak_over_file"] = converter["peak_rss_mb"] / results["checkpoint_mb"]
    results["targets_met"] = {"time": results["time_ratio"] <= 1.5, "memory": results["peak_over_file"] <= 2}
    print_table(results)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
