"""look_inside.html for GPT-2 124M: the file's size and the time to its first render in Chromium.

The model is GPT2EduConfig's defaults (12 blocks x 12 heads, width 768, 124M parameters) at random initialisation:
size and speed depend on the shapes, not on what the weights learned. The prompt is the first 64 tokens of the shipped
corpus; the command continues it 32 tokens (greedy), as a user runs it. The page is then opened from disk in Debian's
Chromium through Playwright, every request but the page itself aborted, five times; the time to first render is
the page's own mark (`data-drawn-ms`, performance.now() when every view is drawn) and Chromium's first contentful
paint, both counted from the start of navigation.

    python bench/bench_look_inside.py            # writes bench/results_look_inside.json
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def prompt_of(n_tokens: int) -> str:
    """The shipped corpus' first n tokens as text (it tokenizes back to exactly n)."""
    from tokenization_gpt2edu import gpt2_tokenizer

    tokenizer = gpt2_tokenizer()
    ids = tokenizer((ROOT / "data" / "default_corpus.txt").read_text(encoding="utf-8")).input_ids
    for extra in range(8):
        text = tokenizer.decode(ids[: n_tokens + extra])
        text = tokenizer.decode(tokenizer(text).input_ids[:n_tokens])
        if len(tokenizer(text).input_ids) == n_tokens:
            return text
    raise RuntimeError(f"no prefix of the corpus tokenizes to exactly {n_tokens} tokens")


def first_render(page_path: Path, loads: int) -> dict:
    """Open the page `loads` times in a fresh context each; the page's drawn mark and the first contentful paint."""
    from playwright.sync_api import sync_playwright

    drawn, paint, requests, errors = [], [], [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
        for _ in range(loads):
            context = browser.new_context(viewport={"width": 1280, "height": 900})

            def route(handle):  # one parameter: Playwright passes the request too to a handler that takes two
                requests.append(handle.request.url)
                handle.continue_() if handle.request.url == page_path.as_uri() else handle.abort()

            context.route("**/*", route)
            page = context.new_page()
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(page_path.as_uri())
            page.wait_for_selector("body[data-drawn-ms]")
            drawn.append(float(page.evaluate("document.body.dataset.drawnMs")))
            fcp = page.evaluate(
                "performance.getEntriesByName('first-contentful-paint').map(entry => entry.startTime)[0] ?? null"
            )
            if fcp is None:  # the paint entry arrives after the load; give it a frame
                page.wait_for_timeout(200)
                fcp = page.evaluate("performance.getEntriesByName('first-contentful-paint')[0].startTime")
            paint.append(float(fcp))
            context.close()
        version = browser.version
        browser.close()
    return {
        "chromium": version,
        "loads": loads,
        "drawn_ms_median": statistics.median(drawn),
        "first_contentful_paint_ms_median": statistics.median(paint),
        "drawn_ms": drawn,
        "first_contentful_paint_ms": paint,
        "requests_other_than_the_page": sorted({url for url in requests if not url.endswith("look_inside.html")}),
        "console_errors": errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--generate", type=int, default=32)
    parser.add_argument("--loads", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results_look_inside.json"))
    parser.add_argument("--keep", default=None, help="a folder to keep the model and the page in (default: none)")
    args = parser.parse_args()

    import torch

    from configuration_gpt2edu import GPT2EduConfig
    from modeling_gpt2edu import GPT2EduForCausalLM

    with tempfile.TemporaryDirectory() as scratch:
        work = Path(args.keep or scratch)
        model_dir, out_dir = work / "gpt2edu-124m", work / "inspect-out"
        torch.manual_seed(0)
        model = GPT2EduForCausalLM(GPT2EduConfig())
        n_params = sum(parameter.numel() for parameter in model.parameters())
        if not (model_dir / "config.json").exists():
            model.save_pretrained(model_dir)
        del model
        prompt = prompt_of(args.prompt_tokens)
        command = [sys.executable, str(ROOT / "inspect_model.py"), "--model", str(model_dir), "--prompt", prompt]
        command += ["--out", str(out_dir), "--generate", str(args.generate), "--device", "cpu"]
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT)
        seconds = time.perf_counter() - start
        page = out_dir / "look_inside.html"
        data = json.loads((out_dir / "inspection.json").read_text(encoding="utf-8"))
        result = {
            "model": f"GPT2EduConfig() defaults at random initialisation: {n_params / 1e6:.1f}M parameters",
            "prompt_tokens": data["prompt_length"],
            "generated_tokens": len(data["generation"]["steps"]),
            "page_bytes": page.stat().st_size,
            "inspection_json_bytes": (out_dir / "inspection.json").stat().st_size,
            "command_seconds": round(seconds, 1),
            **first_render(page, args.loads),
        }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
