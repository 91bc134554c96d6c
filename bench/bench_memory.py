"""Peak memory of one GPT-2 124M training step, gpt2edu against transformers' GPT2LMHeadModel, on the CPU.

Each model runs in a fresh process (peak RSS is per process): build the model (the seed's 124M shapes, untied head,
fp32), then forward, backward and an AdamW step on one batch. The figures are the peak resident memory minus what
the process held after building the model, after the backward pass (activations and gradients) and after the
optimizer's step (plus AdamW's two moments, the same 1.3 GB for both models), so that they count the step, not the
libraries or the weights both hold alike.

    python bench/bench_memory.py                 # batch 2 x 1024
    python bench/bench_memory.py --batch 4 --seq-len 512
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

STEP = r"""
import json, resource, sys, torch
sys.path.insert(0, sys.argv[1])
from transformers import GPT2Config, GPT2LMHeadModel
from configuration_gpt2edu import GPT2EduConfig
from modeling_gpt2edu import GPT2EduForCausalLM

which, batch, seq_len = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
torch.manual_seed(0)
if which == "gpt2edu":
    model = GPT2EduForCausalLM(GPT2EduConfig(drop_rate=0.0))
else:
    model = GPT2LMHeadModel(GPT2Config(tie_word_embeddings=False, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
model.train()
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
input_ids = torch.randint(0, 50257, (batch, seq_len))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
loss = model(input_ids=input_ids, labels=input_ids).loss
loss.backward()
after_backward = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
optimizer.step()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
mb = {"before_mb": before / 1024, "peak_mb": peak / 1024, "step_mb": (peak - before) / 1024,
      "forward_backward_mb": (after_backward - before) / 1024}
print(json.dumps({"model": which, **mb}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=1024)
    args = parser.parse_args()
    root = str(Path(__file__).resolve().parent.parent)
    results = {}
    for which in ("gpt2edu", "gpt2"):
        command = [sys.executable, "-c", STEP, root, which, str(args.batch), str(args.seq_len)]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        results[which] = json.loads(output.strip().splitlines()[-1])
        print(results[which])
    for key, what in (("forward_backward_mb", "forward + backward"), ("step_mb", "the whole step, AdamW's included")):
        ours, theirs = results["gpt2edu"][key], results["gpt2"][key]
        print(
            f"{what}, {args.batch}x{args.seq_len}, fp32, peak above the built model: gpt2edu {ours:.0f} MB, "
            f"GPT2LMHeadModel {theirs:.0f} MB: {ours / theirs:.2f}x"
        )


if __name__ == "__main__":
    main()
