#!/usr/bin/env bash
# One prepared run of every GPU figure issue 19 asks for, on one lent GPU machine (~8 minutes), writing under $OUT
# (or ./gpu-check-out): the side-by-side model bench, the trainer's own steady-state step (tokens/s, MFU), and FSDP
# on one process (train, sharded checkpoint, resume to the same weights, a full model from_pretrained loads).
#
# The GPU machine has no package registry: packages it lacks (transformers 5.24, datasets, torchdata) travel as
# wheels in ./.whl (bench/gpu_wheels.sh downloads them here), and the corpus in ./.gpu-data (copied by the same
# script from ../shared, which does not travel). Run through the device tool:
#   bash bench/gpu_wheels.sh     # here, once
#   run(command="bash bench/gpu_check.sh", carry=[".whl", ".gpu-data"], timeout_s=600)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-check-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PWD || exit 1
fi
export PYTHONPATH=${PYTHONPATH:-$PWD}
CORPUS=.gpu-data/tinyshakespeare.txt
step() { echo; echo "=== $* ($(date +%T))"; }

step "versions and device"
python3 - <<'EOF' 2>&1 | tee "$OUT/versions.txt"
import platform, torch, transformers, accelerate, datasets
print("python", platform.python_version(), "torch", torch.__version__, "transformers", transformers.__version__,
      "accelerate", accelerate.__version__, "datasets", datasets.__version__)
print("device", torch.cuda.get_device_name(0), "driver", torch.version.cuda)
EOF

step "1. model bench: 124M, bf16, eager and compiled, side by side with GPT2LMHeadModel (train 8x1024, generate)"
timeout 300 python3 bench/bench_model.py --device cuda --size 124m --dtype bf16 --compile --rounds 3 \
  --out "$OUT/results_model_cuda_124m.json" 2>&1 | tee "$OUT/bench_model.log" | grep -v Warning

step "2. the trainer's own steady state: GPT-2 124M (untied head), bf16, context 1024, --compile"
for batch in 16 32; do
  rm -rf /tmp/gpu-train
  timeout 240 python3 train_accelerate.py --config_overrides "" --train_file "$CORPUS" --block_size 1024 \
    --per_device_train_batch_size "$batch" --mixed_precision bf16 --compile --max_train_steps 60 --logging_steps 10 \
    --eval_steps 1000 --eval_iters 2 --output_dir /tmp/gpu-train 2>&1 | tail -n 3
  python3 - "$batch" <<'EOF' | tee -a "$OUT/trainer_steady_state.txt"
import json, sys
log = [json.loads(line) for line in open("/tmp/gpu-train/training_log.jsonl")]
steady = [e for e in log if e["step"] > 20]  # after compilation and warm-up
tps = sorted(e["tokens_per_s"] for e in steady)[len(steady) // 2]
mfu = sorted(e["mfu"] for e in steady)[len(steady) // 2]
print(f"batch {sys.argv[1]}x1024: median {tps:,.0f} tokens/s, MFU {mfu:.1%} (log entries after step 20: {len(steady)})")
EOF
done

step "3. FSDP on one process: train 20 steps with checkpoints, resume from step 10, compare, load the full model"
FSDP=(--config_overrides "emb_dim=256,n_heads=4,n_layers=4,context_length=256" --train_file "$CORPUS"
      --max_train_steps 20 --checkpointing_steps 10 --eval_steps 10 --eval_iters 2 --per_device_train_batch_size 8)
rm -rf /tmp/fsdp-a /tmp/fsdp-b
timeout 120 accelerate launch --config_file configs/fsdp.yaml --num_processes 1 train_accelerate.py "${FSDP[@]}" \
  --output_dir /tmp/fsdp-a 2>&1 | tail -n 4
ls /tmp/fsdp-a /tmp/fsdp-a/step_10 | tee "$OUT/fsdp_files.txt"
mkdir -p /tmp/fsdp-b && cp -r /tmp/fsdp-a/step_10 /tmp/fsdp-b/
timeout 120 accelerate launch --config_file configs/fsdp.yaml --num_processes 1 train_accelerate.py "${FSDP[@]}" \
  --output_dir /tmp/fsdp-b --resume_from_checkpoint latest 2>&1 | tail -n 4
python3 - <<'EOF' | tee "$OUT/fsdp_resume.txt"
import torch, modeling_gpt2edu  # noqa: F401
from transformers import AutoModelForCausalLM
a = AutoModelForCausalLM.from_pretrained("/tmp/fsdp-a")
b = AutoModelForCausalLM.from_pretrained("/tmp/fsdp-b")
diff = max((pa - pb).abs().max().item() for pa, pb in zip(a.parameters(), b.parameters(), strict=True))
print(f"FSDP: uninterrupted vs resumed-from-step-10 final weights, max abs difference {diff:.3g}")
print("from_pretrained loaded", type(a).__name__, sum(p.numel() for p in a.parameters()), "parameters")
EOF

step "done"
ls -l "$OUT"
