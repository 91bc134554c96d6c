"""inspect_model.py: attention maps against transformers' GPT-2, the logit lens by hand, the pictures, bad inputs."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, tiny_config
from transformers import AutoModelForCausalLM, GPT2LMHeadModel

from convert_checkpoint import gpt2edu_config_to_gpt2, gpt2edu_to_gpt2_state_dict
from inspect_model import OUTPUT_FILES, main, plot_attention, write_outputs
from modeling_gpt2edu import GPT2EduForCausalLM

PROMPT = "Every effort moves you toward the goal, and then"


@pytest.fixture(scope="module")
def folders(tokenizer, tmp_path_factory) -> dict:
    """A tiny gpt2edu folder with GPT-2's vocabulary, and transformers' own GPT-2 with the same weights.

    Every LayerNorm gets a random scale and shift: at their initial values (1 and 0) a second final norm would change
    nothing, and a lens that normed the last layer twice would pass.
    """
    torch.manual_seed(1)
    model = GPT2EduForCausalLM(tiny_config(vocab_size=50257, bos_token_id=50256, eos_token_id=50256)).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith(".scale"):
                parameter.uniform_(0.5, 2.0)
            elif name.endswith(".shift"):
                parameter.normal_(0.0, 0.5)
    gpt2 = GPT2LMHeadModel(gpt2edu_config_to_gpt2(model.config))
    gpt2.load_state_dict(gpt2edu_to_gpt2_state_dict(model.state_dict(), model.config.n_layers))
    result = {}
    for kind, saved in (("gpt2edu", model), ("gpt2", gpt2)):
        result[kind] = tmp_path_factory.mktemp(kind)
        saved.save_pretrained(result[kind])
        tokenizer.save_pretrained(result[kind])
    return result


@pytest.fixture(scope="module", params=["gpt2edu", "gpt2"])
def inspected(request, folders, tmp_path_factory):
    """(kind, folder, out, the JSON record) of the command run on the gpt2edu folder and on the GPT-2 folder."""
    out = tmp_path_factory.mktemp("inspect") / "out"
    assert main(["--model", str(folders[request.param]), "--prompt", PROMPT, "--out", str(out)]) == 0
    return (
        request.param,
        folders[request.param],
        out,
        json.loads((out / "inspection.json").read_text(encoding="utf-8")),
    )


def prompt_ids(tokenizer) -> torch.Tensor:
    return torch.tensor([tokenizer(PROMPT).input_ids])


def test_attention_maps_equal_gpt2_eager(inspected, folders, tokenizer):
    _, _, _, record = inspected
    reference = GPT2LMHeadModel.from_pretrained(folders["gpt2"], attn_implementation="eager").eval()
    with torch.no_grad():
        expected = torch.stack(reference(prompt_ids(tokenizer), output_attentions=True).attentions, dim=1)[0]
    got = torch.tensor(record["attentions"])  # [layer][head][query][key]
    assert got.shape == expected.shape == (2, 4, len(record["tokens"]), len(record["tokens"]))
    torch.testing.assert_close(got, expected)


def test_tokens_are_each_id_decoded_on_its_own(inspected, tokenizer):
    _, _, _, record = inspected
    assert record["prompt"] == PROMPT
    assert record["tokens"] == [tokenizer.decode([i]) for i in tokenizer(PROMPT).input_ids]
    assert record["tokens"][1] == " effort"  # the plain string in JSON; only the pictures show '␣'


def test_lens_last_layer_and_next_token_are_the_models_own(inspected, tokenizer):
    _, folder, _, record = inspected
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        logits = model(prompt_ids(tokenizer)).logits[0]
    last = record["logit_lens"][-1]
    assert len(record["logit_lens"]) == model.config.num_hidden_layers + 1
    assert [cell["token_id"] for cell in last] == logits.argmax(dim=-1).tolist()
    probs, ids = logits[-1].softmax(dim=-1).topk(10)
    assert [item["token_id"] for item in record["next_token"]] == ids.tolist()
    assert [item["token"] for item in record["next_token"]] == [tokenizer.decode([i]) for i in ids.tolist()]
    torch.testing.assert_close(torch.tensor([item["prob"] for item in record["next_token"]]), probs)
    assert record["next_token"][0]["token_id"] == last[-1]["token_id"]


def test_middle_layer_lens_is_the_head_on_the_final_norm(inspected, tokenizer):
    kind, folder, _, record = inspected
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    if kind == "gpt2edu":
        blocks, final_norm, head = model.model.trf_blocks, model.model.final_norm, model.out_head
    else:
        blocks, final_norm, head = model.transformer.h, model.transformer.ln_f, model.lm_head
    captured = []
    blocks[0].register_forward_hook(lambda module, args, output: captured.append(output))
    with torch.no_grad():
        model(prompt_ids(tokenizer))
        hidden = captured[0][0] if isinstance(captured[0], tuple) else captured[0]  # block 0's output
        probs, ids = head(final_norm(hidden[0])).softmax(dim=-1).max(dim=-1)
    middle = record["logit_lens"][1]  # layer 0 is the embeddings, layer 1 the output of block 0
    assert [cell["token_id"] for cell in middle] == ids.tolist()
    assert [cell["token"] for cell in middle] == [tokenizer.decode([i]) for i in ids.tolist()]
    torch.testing.assert_close(torch.tensor([cell["prob"] for cell in middle]), probs)


def test_pictures_are_written(inspected):
    _, _, out, _ = inspected
    assert sorted(path.name for path in out.iterdir()) == sorted(OUTPUT_FILES)
    for name in ("attention.png", "logit_lens.png", "next_token.png"):
        data = (out / name).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000, name


def test_zoom_draws_one_map_large(folders, tmp_path):
    folder = folders["gpt2edu"]
    attentions = torch.rand(2, 4, 3, 3)
    assert len(plot_attention(attentions, ["a", " b", "c"], [0, 1], [0, 1, 2, 3]).axes) == 8 + 1  # + the colorbar
    assert len(plot_attention(attentions, ["a", " b", "c"], [1], [2]).axes) == 1 + 1
    out = tmp_path / "zoom"
    assert main(["--model", str(folder), "--prompt", PROMPT, "--out", str(out), "--layer", "1", "--head", "2"]) == 0
    record = json.loads((out / "inspection.json").read_text(encoding="utf-8"))
    assert torch.tensor(record["attentions"]).shape[:2] == (2, 4)  # the JSON keeps every layer and head


def run_command(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "inspect_model.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **env},
        cwd=ROOT,
    )


def test_command_prints_a_summary_and_reads_a_hub_id_from_the_local_cache(folders, tokenizer, tmp_path):
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--test-org--tiny-gpt2"  # the Hub cache's layout, as a download leaves it
    shutil.copytree(folders["gpt2"], repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    out = tmp_path / "out"
    result = run_command(
        "--model", "test-org/tiny-gpt2", "--prompt", PROMPT, "--out", str(out), HF_HUB_CACHE=str(tmp_path / "hub")
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    record = json.loads((out / "inspection.json").read_text(encoding="utf-8"))
    reference = GPT2LMHeadModel.from_pretrained(folders["gpt2"], attn_implementation="eager").eval()
    with torch.no_grad():
        expected = torch.stack(reference(prompt_ids(tokenizer), output_attentions=True).attentions, dim=1)[0]
    torch.testing.assert_close(torch.tensor(record["attentions"]), expected)
    lines = result.stdout.splitlines()
    top = record["next_token"][0]
    assert lines[lines.index("Next token:") + 1].split(maxsplit=1) == [f"{top['prob']:.3g}", repr(top["token"])]
    lens_lines = [line for line in lines if line.startswith(("  embeddings", "  block "))]
    assert len(lens_lines) == len(record["logit_lens"]) == 3
    for line, row in zip(lens_lines, record["logit_lens"], strict=True):
        assert line.endswith(repr(row[-1]["token"])) and f" {row[-1]['prob']:.3g} " in line, line


BAD_INPUTS = {
    "no such folder": (["--model", "/no/such/folder"], "no such model folder or Hub id: '/no/such/folder'"),
    "no such Hub id": (["--model", "nobody-here/no-such-model"], "no such model folder or Hub id"),
    "empty prompt": (["--prompt", ""], "--prompt is empty"),
    "prompt longer than the context": (
        ["--prompt", " ".join(["word"] * 70)],
        "the prompt has 70 tokens; the model's context holds 64",
    ),
    "out is a file": (["--out", "{file}"], "exists and is not a folder"),
    "out under a file": (["--out", "{file}/out"], "is not a folder"),
    "layer out of range": (["--layer", "2"], "--layer must be between 0 and 1"),
    "top-k of zero": (["--top-k", "0"], "--top-k must be at least 1"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, folders, tmp_path):
    changes, expected = BAD_INPUTS[case]
    (tmp_path / "file").write_text("not a folder")
    args = {"--model": str(folders["gpt2edu"]), "--prompt": PROMPT, "--out": str(tmp_path / "out")}
    args.update(zip(changes[::2], (value.format(file=tmp_path / "file") for value in changes[1::2]), strict=True))
    result = run_command(*[item for pair in args.items() for item in pair])
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("inspect_model.py: error: "), result.stderr
    assert expected in result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["file"]
    assert (tmp_path / "file").read_text() == "not a folder"


def test_write_outputs_writes_all_files_or_none(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    write_outputs(out, {"a.png": b"new a", "b.json": b"new b"})
    assert (out / "a.png").read_bytes() == b"new a" and (out / "notes.txt").read_text() == "mine"

    with pytest.raises(OSError):  # no folder "missing": the second write fails, before anything is renamed
        write_outputs(out, {"a.png": b"newer a", "missing/b.png": b"b"})
    assert sorted(path.name for path in out.iterdir()) == ["a.png", "b.json", "notes.txt"]
    assert (out / "a.png").read_bytes() == b"new a"

    new = tmp_path / "new" / "deeper"
    with pytest.raises(OSError):
        write_outputs(new, {"a.png": b"a", "missing/b.png": b"b"})
    assert not (tmp_path / "new").exists()


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc and /sys")
@pytest.mark.parametrize("out", ["/proc/gpt2edu-inspect-out", "/sys/gpt2edu-inspect-out/deeper"])
def test_out_that_cannot_be_created_is_one_line_exit_2(out, folders):
    """/proc and /sys look like folders, but nothing can be made in them (not even by root): refused before loading."""
    result = run_command("--model", str(folders["gpt2edu"]), "--prompt", PROMPT, "--out", out)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("inspect_model.py: error: "), result.stderr
    assert f"--out '{out}' cannot be created or written" in result.stderr
    assert not os.path.exists(out)


def test_write_outputs_leaves_no_staging_behind(tmp_path):
    out = tmp_path / "out"
    write_outputs(out, {"a.png": b"a"})
    with pytest.raises(OSError):
        write_outputs(out, {"b.png": b"b", "missing/c.png": b"c"})
    assert sorted(path.name for path in out.iterdir()) == ["a.png"]  # no hidden staging folder either
