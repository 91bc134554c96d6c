"""Run a model in llama.cpp through `convert_checkpoint.py SRC OUT.gguf` and compare it with transformers.

For each --dtype: converts SRC with the command a user types, loads the GGUF file in llama.cpp (llama-cpp-python),
and compares with the same model in transformers on the prompt: the token ids, the last position's logits (largest
absolute difference) and the greedy continuation (llama.cpp's own sampler at temperature 0, against
`generate(do_sample=False)`). Not a test: llama-cpp-python has no wheel for every machine and builds from source in
many minutes. Where it is not installed in this environment, give a Python that has it (--llama-python): the
llama.cpp side runs there, in a subprocess.

    CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install --no-binary llama-cpp-python llama-cpp-python   # once, ~20 min
    python bench/check_llama_cpp.py /tmp/gguf-model --dtype float32 float16 --llama-python /tmp/llvenv/bin/python

Prints one JSON object per dtype and writes them all to --out.
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import modeling_gpt2edu  # noqa: E402, F401  (registers gpt2edu with the Auto classes)

# Runs where llama_cpp is installed: argv is the GGUF file, the prompt, the number of new tokens and the context.
LLAMA_CPP = """
import json, sys
from llama_cpp import Llama
path, prompt, new_tokens, context = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
llm = Llama(model_path=path, n_ctx=context, logits_all=True, verbose=False, seed=0)
ids = llm.tokenize(prompt.encode("utf-8"), add_bos=False)
llm.eval(ids)
last = [float(x) for x in llm.scores[len(ids) - 1]]
llm.reset()
completion = llm.create_completion(prompt, max_tokens=new_tokens, temperature=0.0)
print(json.dumps({"ids": ids, "last_logits": last, "text": completion["choices"][0]["text"],
                  "metadata": {k: v for k, v in llm.metadata.items() if not k.startswith("tokenizer.ggml.")}}))
"""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", help="what convert_checkpoint.py reads: a model folder, a seed .pth or a Hub id")
    parser.add_argument("--dtype", nargs="+", default=["float32", "float16"], help="GGUF dtypes to check")
    parser.add_argument("--prompt", default="Every effort moves you")
    parser.add_argument("--new-tokens", type=int, default=20)
    parser.add_argument("--llama-python", default=sys.executable, help="a Python with llama-cpp-python installed")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results_llama_cpp.json"))
    return parser.parse_args()


def transformers_side(folder: Path, prompt: str, new_tokens: int) -> dict:
    """The model in transformers: prompt ids, last logits (float32) and the greedy continuation."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        last = model(ids).logits[0, -1]
        out = model.generate(ids, max_new_tokens=new_tokens, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    return {
        "ids": ids[0].tolist(),
        "last_logits": last,
        "text": tokenizer.decode(out[0, ids.shape[1] :]),
        "context": model.config.max_position_embeddings,
    }


def main() -> None:
    args = parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "gpt2edu"  # the model as transformers loads it, whatever SRC's form
        subprocess.run([sys.executable, str(ROOT / "convert_checkpoint.py"), args.src, str(folder)], check=True)
        reference = transformers_side(folder, args.prompt, args.new_tokens)
        for dtype in args.dtype:
            gguf_file = Path(tmp) / f"model-{dtype}.gguf"
            command = [sys.executable, str(ROOT / "convert_checkpoint.py"), args.src, str(gguf_file), "--dtype", dtype]
            subprocess.run(command, check=True)
            run = [args.llama_python, "-c", LLAMA_CPP, str(gguf_file), args.prompt, str(args.new_tokens)]
            llama = json.loads(
                subprocess.run(run + [str(reference["context"])], check=True, capture_output=True, text=True)
                .stdout.strip()
                .splitlines()[-1]
            )
            difference = (torch.tensor(llama["last_logits"]) - reference["last_logits"]).abs().max().item()
            result = {
                "dtype": dtype,
                "command": f"python convert_checkpoint.py {args.src} model.gguf --dtype {dtype}",
                "file_mb": round(gguf_file.stat().st_size / 2**20, 1),
                "same_prompt_ids": llama["ids"] == reference["ids"],
                "max_abs_logit_difference": difference,
                "logit_range": [reference["last_logits"].min().item(), reference["last_logits"].max().item()],
                "same_argmax": int(torch.tensor(llama["last_logits"]).argmax())
                == int(reference["last_logits"].argmax()),
                "greedy_text_llama_cpp": llama["text"],
                "greedy_text_transformers": reference["text"],
                "same_greedy_text": llama["text"] == reference["text"],
                "gguf_metadata": llama["metadata"],
            }
            print(json.dumps(result, indent=2))
            results.append(result)
    Path(args.out).write_text(json.dumps({"src": args.src, "prompt": args.prompt, "results": results}, indent=2))


if __name__ == "__main__":
    main()
