#!/usr/bin/env bash
# Here, before bench/gpu_check.sh runs on the lent GPU machine (which reaches no package registry): download the
# wheels of what its image lacks or has in another version, for its Python 3.12 on x86-64, into ./.whl, and copy the
# corpus from ../shared into ./.gpu-data (both folders are git-ignored; the device tool carries them).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl .gpu-data
cp ../shared/corpora/tinyshakespeare.txt .gpu-data/
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform any -d .whl \
  transformers==5.24.0 datasets==5.2.0 torchdata==0.11.0 dill multiprocess
ls -l .whl .gpu-data
