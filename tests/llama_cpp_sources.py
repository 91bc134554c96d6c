"""llama.cpp's own GGUF converter, taken from the llama-cpp-python source distribution on the package registry.

llama.cpp itself is not on the registry, but llama-cpp-python's sdist vendors it whole (vendor/llama.cpp), with its
converter: `convert_hf_to_gguf.py`, the `conversion/` package it imports and `gguf-py/`, the gguf library of the same
llama.cpp commit (the script puts it first on sys.path itself). Only those are extracted, once per version, into the
test cache (`$GPT2EDU_TEST_CACHE`, default `~/.cache/gpt2edu-tests`); the first run downloads the sdist (about 77 MB).
"""

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

VERSION = "0.3.36"  # llama-cpp-python's version, which pins the llama.cpp commit it vendors
NEEDED = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")


def cache_root() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gpt2edu-tests"
    return Path(os.environ.get("GPT2EDU_TEST_CACHE") or default) / f"llama.cpp-from-llama-cpp-python-{VERSION}"


def fetch() -> Path:
    """Return the folder holding llama.cpp's `convert_hf_to_gguf.py`; download and extract it the first time.

    Raises:
        RuntimeError: If pip cannot download the sdist (no registry reachable, say).
    """
    root = cache_root()
    if (root / "convert_hf_to_gguf.py").is_file():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root.parent) as tmp:
        download = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:"]
            + [f"llama-cpp-python=={VERSION}", "--dest", tmp],
            capture_output=True,
            text=True,
        )
        archives = list(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        if download.returncode != 0 or not archives:
            last = (download.stderr.strip().splitlines() or ["no sdist"])[-1]
            raise RuntimeError(f"pip could not download the llama-cpp-python {VERSION} sdist: {last}")
        prefix = f"llama_cpp_python-{VERSION}/vendor/llama.cpp/"
        staging = Path(tmp) / "staging"
        with tarfile.open(archives[0]) as archive:
            for member in archive:
                name = member.name.removeprefix(prefix)
                if member.isfile() and member.name.startswith(prefix) and name.startswith(NEEDED) and ".." not in name:
                    (staging / name).parent.mkdir(parents=True, exist_ok=True)
                    (staging / name).write_bytes(archive.extractfile(member).read())
        shutil.rmtree(root, ignore_errors=True)
        staging.rename(root)  # complete or absent: a run killed midway leaves no half-extracted cache
    return root
