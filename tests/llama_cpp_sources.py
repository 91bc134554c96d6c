"""llama.cpp's own GGUF converter, taken from the llama-cpp-python source distribution on the package registry.

llama.cpp itself is not on the registry, but llama-cpp-python's sdist vendors it whole (vendor/llama.cpp), with its
converter: `convert_hf_to_gguf.py`, the `conversion/` package it imports and `gguf-py/`, the gguf library of the same
llama.cpp commit (the script puts it first on sys.path itself). Only those are extracted, once per version, into the
test cache (`$GPT2EDU_TEST_CACHE`, default `~/.cache/gpt2edu-tests`); the first run downloads the sdist (about 77 MB).
"""

import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from transformers_sources import download_sdist

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
        archive_path = download_sdist("llama-cpp-python", VERSION, Path(tmp))
        prefix = f"llama_cpp_python-{VERSION}/vendor/llama.cpp/"
        staging = Path(tmp) / "staging"
        with tarfile.open(archive_path) as archive:
            for member in archive:
                name = member.name.removeprefix(prefix)
                if member.isfile() and member.name.startswith(prefix) and name.startswith(NEEDED) and ".." not in name:
                    (staging / name).parent.mkdir(parents=True, exist_ok=True)
                    (staging / name).write_bytes(archive.extractfile(member).read())
        shutil.rmtree(root, ignore_errors=True)
        staging.rename(root)  # complete or absent: a run killed midway leaves no half-extracted cache
    return root
