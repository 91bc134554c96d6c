"""transformers' own generic model tests, taken from its source distribution on the package registry.

The sdist of the installed transformers version ships `tests/test_modeling_common.py` (`ModelTesterMixin`) and
`tests/test_configuration_common.py` (`ConfigTester`), but not three small modules they import: the export and
generation test mixins and the dict of common config arguments. Those are written here as stand-ins, stated as such:
the two mixins are empty (their tests do not run; gpt2edu's export and generation are tested in test_model.py and
test_model_contract.py), and the config arguments are the general `PreTrainedConfig` fields with non-default values.

The extracted files are cached per transformers version (`$GPT2EDU_TEST_CACHE`, default `~/.cache/gpt2edu-tests`), so
only the first run on a machine downloads the sdist (about 10 MB).
"""

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import transformers

PACKAGE = "transformers_tests"
NEEDED = ("test_modeling_common.py", "test_configuration_common.py")

STAND_INS = {
    "exporters/test_export.py": '''"""Stand-in written by gpt2edu's tests: the sdist does not ship tests/exporters."""


class ExportTesterMixin:
    """Empty: gpt2edu's torch.export is tested in its own test_model_contract.py."""
''',
    "generation/test_utils.py": '''"""Stand-in written by gpt2edu's tests: the sdist does not ship tests/generation."""


class GenerationTesterMixin:
    """Empty: gpt2edu's generate() is tested in its own test_model.py and test_model_contract.py."""
''',
    "utils/test_configuration_utils.py": '''"""Stand-in written by gpt2edu's tests (the sdist lacks tests/utils).

The general PreTrainedConfig arguments, each with a value other than its default, for ConfigTester's
check_config_arguments_init.
"""

config_common_kwargs = {
    "return_dict": False,
    "output_hidden_states": True,
    "output_attentions": True,
    "dtype": "float16",
    "tie_word_embeddings": True,
    "chunk_size_feed_forward": 5,
    "architectures": ["BertModel"],
    "id2label": {0: "label"},
    "label2id": {"label": 0},
    "problem_type": "regression",
    "bos_token_id": 5,
    "eos_token_id": 6,
    "pad_token_id": 7,
}
''',
}


def cache_root() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gpt2edu-tests"
    return Path(os.environ.get("GPT2EDU_TEST_CACHE") or default) / f"transformers-{transformers.__version__}"


def download_sdist(name: str, version: str, dest: Path) -> Path:
    """Download the source distribution of `name==version` with pip into `dest`; return the archive's path.

    Raises:
        RuntimeError: If pip cannot download it (no registry reachable, say).
    """
    download = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:"]
        + [f"{name}=={version}", "--dest", str(dest)],
        capture_output=True,
        text=True,
    )
    archives = list(dest.glob(f"{name.replace('-', '_')}-*.tar.gz")) + list(dest.glob(f"{name}-*.tar.gz"))
    if download.returncode != 0 or not archives:
        last = (download.stderr.strip().splitlines() or ["no sdist"])[-1]
        raise RuntimeError(f"pip could not download the {name} {version} sdist: {last}")
    return archives[0]


def fetch() -> Path:
    """Return a folder holding the `transformers_tests` package; download and extract it the first time."""
    root = cache_root()
    if all((root / PACKAGE / name).is_file() for name in NEEDED):
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root.parent) as tmp:
        archive_path = download_sdist("transformers", transformers.__version__, Path(tmp))
        staging = Path(tmp) / "staging"
        package = staging / PACKAGE
        package.mkdir(parents=True)
        with tarfile.open(archive_path) as archive:
            for name in NEEDED:
                member = archive.getmember(f"transformers-{transformers.__version__}/tests/{name}")
                (package / name).write_bytes(archive.extractfile(member).read())
        (package / "__init__.py").write_text("")
        for relative, text in STAND_INS.items():
            path = package / relative
            path.parent.mkdir(exist_ok=True)
            (path.parent / "__init__.py").touch()
            path.write_text(text)
        shutil.rmtree(root, ignore_errors=True)
        staging.rename(root)  # complete or absent: a run killed midway leaves no half-extracted cache
    return root
