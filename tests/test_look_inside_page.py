"""look_inside.html: one offline file whose numbers are transformers' GPT-2's, checked in Debian's Chromium.

The page's data is compared with GPT2LMHeadModel run on the same weights (attentions, hidden states, logits,
generate()'s tokens) and with transformers' logits processors; Playwright then drives Chromium on the file:// page,
every request blocked, and reads the numbers back from the DOM.
"""

import base64
import hashlib
import json
import os
import re
import shutil

import pytest
import torch
from conftest import ROOT, tiny_config
from transformers import (
    AutoModelForCausalLM,
    GPT2LMHeadModel,
    MambaConfig,
    MambaForCausalLM,
    PreTrainedTokenizerFast,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
    set_seed,
)

from convert_checkpoint import gpt2edu_config_to_gpt2, gpt2edu_to_gpt2_state_dict
from inspect_model import OUTPUT_FILES, PAGE_MAX_TOKENS, inspect_text, main, page_html, parse_args
from modeling_gpt2edu import GPT2EduForCausalLM

PROMPT = "Every effort moves you toward the goal, and then"
OTHER_PROMPT = "Every effort moves you\ntoward the goal"  # a newline, which the page shows as ↵
NEW_TOKENS = 6
SEED = 3
CHROMIUM = "/usr/bin/chromium"
# Headless, and quiet on a machine without a network (Chromium otherwise tries its update and sync services).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOT = ROOT / "docs" / "look_inside_page.png"  # copied there when GPT2EDU_SCREENSHOTS=1


def scrambled(config) -> GPT2EduForCausalLM:
    """A random model whose LayerNorms have random scales and shifts, and whose head is 40x GPT-2's initial scale:
    its next-token distributions are peaked enough for top-p to cut and for the pictures to show contrast."""
    model = GPT2EduForCausalLM(config).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith(".scale"):
                parameter.uniform_(0.5, 2.0)
            elif name.endswith(".shift"):
                parameter.normal_(0.0, 0.5)
        model.out_head.weight.mul_(40)
    return model


@pytest.fixture(scope="module")
def folders(tokenizer, tmp_path_factory) -> dict:
    """gpt2edu and transformers GPT-2 twins (the same weights), another shape, and two models the page refuses."""
    torch.manual_seed(1)
    gpt2_vocab = dict(vocab_size=50257, bos_token_id=50256, eos_token_id=50256)
    model = scrambled(tiny_config(**gpt2_vocab))
    gpt2 = GPT2LMHeadModel(gpt2edu_config_to_gpt2(model.config))
    gpt2.load_state_dict(gpt2edu_to_gpt2_state_dict(model.state_dict(), model.config.n_layers))
    other = scrambled(tiny_config(n_layers=3, n_heads=2, emb_dim=48, context_length=160, **gpt2_vocab))
    result = {}
    names = {"gpt2edu": "random-gpt2edu-2x4", "gpt2": "gpt2", "other": "other"}  # the first names the screenshot's
    for kind, saved in (("gpt2edu", model), ("gpt2", gpt2), ("other", other)):
        result[kind] = tmp_path_factory.mktemp(names[kind], numbered=False)
        saved.save_pretrained(result[kind])
        tokenizer.save_pretrained(result[kind])
    # A model without attention: a Mamba (state-space) model, which transformers loads as a causal LM.
    result["mamba"] = tmp_path_factory.mktemp("mamba")
    mamba = MambaConfig(vocab_size=50257, hidden_size=16, state_size=4, num_hidden_layers=1, expand=2)
    MambaForCausalLM(mamba).save_pretrained(result["mamba"])
    # A tokenizer that drops what it does not know (BPE without an unknown token): "zzz" becomes no tokens at all.
    from tokenizers import Tokenizer, models

    result["drops"] = tmp_path_factory.mktemp("drops")
    GPT2EduForCausalLM(tiny_config()).save_pretrained(result["drops"])
    bpe = Tokenizer(models.BPE(vocab={"a": 0, "b": 1}, merges=[], unk_token=None))
    PreTrainedTokenizerFast(tokenizer_object=bpe).save_pretrained(result["drops"])
    return result


def shown_as(value: float) -> str:
    """A number as the page prints it (its fmt): three decimals, or one significant digit below 0.001."""
    return f"{value:.3f}" if value >= 0.001 or value == 0 else f"{value:.1e}".replace("e-0", "e-")


def page_data(html: str) -> dict:
    block = re.search(r'<script type="application/json" id="look-inside-data">(.*?)</script>', html, re.S)
    return json.loads(block.group(1))


@pytest.fixture(scope="module")
def runs(folders, tmp_path_factory) -> dict:
    """kind -> (the page's path, its record, its HTML): greedy on both twins, sampled, another shape.

    The first is the whole command (its record read back from inspection.json); the others stop short of the
    pictures: `inspect_text` (what the command runs before drawing) and `page_html`, written to a file.
    """
    commands = {
        "gpt2edu": (folders["gpt2edu"], PROMPT, "--generate", str(NEW_TOKENS)),
        "gpt2": (folders["gpt2"], PROMPT, "--generate", str(NEW_TOKENS)),
        "sampled": (folders["gpt2edu"], PROMPT, "--generate", str(NEW_TOKENS), "--do-sample", "--seed", str(SEED)),
        "other": (folders["other"], OTHER_PROMPT, "--generate", "4"),
    }
    result = {}
    for kind, (folder, prompt, *extra) in commands.items():
        out = tmp_path_factory.mktemp(kind) / "out"
        argv = ["--model", str(folder), "--prompt", prompt, "--out", str(out), *extra]
        if kind == "gpt2edu":
            assert main(argv) == 0
            record = json.loads((out / "inspection.json").read_text(encoding="utf-8"))
        else:
            record = json.loads(json.dumps(inspect_text(parse_args(argv))[0]))
            out.mkdir()
            (out / "look_inside.html").write_bytes(page_html(record))
        result[kind] = (out / "look_inside.html", record, (out / "look_inside.html").read_text(encoding="utf-8"))
    return result


def thousandths(record: dict) -> torch.Tensor:
    """The page's attention as a (layers, heads, seq, seq) tensor of fractions, zeros in the future."""
    rows = record["attention_thousandths"]
    seq = len(record["sequence"])
    full = torch.zeros(len(rows), len(rows[0]), seq, seq, dtype=torch.float64)
    for layer, heads in enumerate(rows):
        for head, queries in enumerate(heads):
            for query, weights in enumerate(queries):
                full[layer, head, query, : query + 1] = torch.tensor(weights, dtype=torch.float64)
    return full / record["attention_scale"]


def test_page_is_one_file_that_can_fetch_nothing(runs):
    _, record, html = runs["gpt2edu"]
    assert page_data(html) == {key: value for key, value in record.items() if key != "attentions"}
    policy = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)">', html).group(1)
    rules = dict(rule.strip().split(" ", 1) for rule in policy.split(";"))
    assert rules["default-src"] == "'none'" and rules["base-uri"] == "'none'"
    inline = {
        "script-src": re.findall(r"<script>(.*?)</script>", html, re.S),
        "style-src": re.findall(r"<style>(.*?)</style>", html, re.S),
    }
    for rule, bodies in inline.items():  # one inline script and one style, allowed by their hashes only
        assert len(bodies) == 1, rule
        digest = base64.b64encode(hashlib.sha256(bodies[0].encode("utf-8")).digest()).decode()
        assert rules[rule] == f"'sha256-{digest}'"
    code = html.replace(re.search(r'id="look-inside-data">(.*?)</script>', html, re.S).group(1), "")
    assert not re.search(r"\b(src|href)\s*=|url\(|@import|fetch\(|XMLHttpRequest", code)
    assert set(re.findall(r"\w+://[^\s\"'<>]+", code)) == {"http://www.w3.org/2000/svg"}  # an XML namespace name


def test_page_numbers_are_gpt2s_own(runs, folders):
    """Attention, residual stream, lens, logits and steps equal GPT2LMHeadModel's on the same weights."""
    _, record, _ = runs["gpt2edu"]
    gpt2 = GPT2LMHeadModel.from_pretrained(folders["gpt2"], attn_implementation="eager").eval()
    ids = torch.tensor([record["sequence_ids"]])
    prompt_length, n_layers = record["prompt_length"], gpt2.config.n_layer
    added = {"attn": [], "mlp": []}
    for block in gpt2.transformer.h:
        block.attn.register_forward_hook(lambda module, args, output: added["attn"].append(output[0][0]))
        block.mlp.register_forward_hook(lambda module, args, output: added["mlp"].append(output[0]))
    with torch.no_grad():
        output = gpt2(ids, output_attentions=True, output_hidden_states=True)
    attentions = torch.stack(output.attentions, dim=1)[0].double()
    got = thousandths(record)
    assert got.shape == attentions.shape == (2, 4, len(ids[0]), len(ids[0]))
    torch.testing.assert_close(got, attentions, atol=1e-3, rtol=0)  # whole thousandths: within one of them
    assert {sum(row) for heads in record["attention_thousandths"] for rows in heads for row in rows} == {1000}

    hidden = output.hidden_states  # the embeddings, blocks 0..n-2's outputs, then the last block's after ln_f
    stream = [hidden[0][0]]
    for block in range(n_layers):  # the stream grows by exactly what attention and the MLP add
        stream.append(stream[-1] + added["attn"][block] + added["mlp"][block])
        if block < n_layers - 1:
            torch.testing.assert_close(stream[-1], hidden[block + 1][0])
    residual = record["residual"]
    torch.testing.assert_close(torch.tensor(residual["stream"]), torch.stack(stream).norm(dim=-1))
    torch.testing.assert_close(torch.tensor(residual["attention"]), torch.stack(added["attn"]).norm(dim=-1))
    torch.testing.assert_close(torch.tensor(residual["mlp"]), torch.stack(added["mlp"]).norm(dim=-1))

    torch.testing.assert_close(torch.tensor(record["next_logits"]), output.logits[0, prompt_length - 1])
    lens = [gpt2.lm_head(gpt2.transformer.ln_f(h[0])) for h in hidden[:-1]] + [output.logits[0]]
    for layer, logits in enumerate(lens):
        probs, top_ids = logits.detach().softmax(dim=-1).topk(5)
        cells = record["logit_lens_top"][layer]
        assert [[item["token_id"] for item in cell] for cell in cells] == top_ids.tolist()
        torch.testing.assert_close(torch.tensor([[item["prob"] for item in cell] for cell in cells]), probs)

    prompt = ids[:, :prompt_length]
    with torch.no_grad():
        generated = gpt2.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=NEW_TOKENS,
            do_sample=False,
            pad_token_id=50256,
            return_dict_in_generate=True,
            output_scores=True,
        )
    steps = record["generation"]["steps"]
    assert [step["token_id"] for step in steps] == generated.sequences[0, prompt_length:].tolist()
    assert record["sequence_ids"] == generated.sequences[0].tolist()
    for step, scores in zip(steps, generated.scores, strict=True):
        probs, top_ids = scores[0].softmax(dim=-1).topk(10)
        assert [item["token_id"] for item in step["drawn_from"]] == top_ids.tolist()
        torch.testing.assert_close(torch.tensor([item["prob"] for item in step["drawn_from"]]), probs)


def test_a_gpt2_folder_gives_the_gpt2edu_folders_page(runs):
    _, ours, _ = runs["gpt2edu"]
    _, theirs, _ = runs["gpt2"]
    assert theirs["sequence_ids"] == ours["sequence_ids"]
    assert theirs["model"]["model_type"] == "gpt2" and ours["model"]["model_type"] == "gpt2edu"
    torch.testing.assert_close(thousandths(theirs), thousandths(ours), atol=1e-3, rtol=0)
    for part in ("stream", "attention", "mlp"):
        torch.testing.assert_close(torch.tensor(theirs["residual"][part]), torch.tensor(ours["residual"][part]))
    torch.testing.assert_close(torch.tensor(theirs["next_logits"]), torch.tensor(ours["next_logits"]))


def test_sampled_steps_are_generates_with_the_seed(runs, folders):
    _, record, _ = runs["sampled"]
    generation = record["generation"]
    assert generation["do_sample"] is True and generation["seed"] == SEED
    model = AutoModelForCausalLM.from_pretrained(folders["gpt2edu"]).eval()
    prompt = torch.tensor([record["sequence_ids"][: record["prompt_length"]]])
    set_seed(SEED)
    with torch.no_grad():  # the model's own distribution: temperature 1, no top-k (generate()'s default is 50)
        expected = model.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=NEW_TOKENS,
            do_sample=True,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            pad_token_id=50256,
        )
    assert [step["token_id"] for step in generation["steps"]] == expected[0, prompt.shape[1] :].tolist()


def test_sizes_come_from_the_config(runs):
    _, record, html = runs["other"]
    data = page_data(html)
    assert {key: data["model"][key] for key in ("n_layers", "n_heads", "emb_dim", "context_length")} == {
        "n_layers": 3,
        "n_heads": 2,
        "emb_dim": 48,
        "context_length": 160,
    }
    seq = len(data["sequence"])
    assert seq == data["prompt_length"] + 4
    assert thousandths(data).shape == (3, 2, seq, seq)
    assert torch.tensor(data["residual"]["stream"]).shape == (4, seq)
    assert torch.tensor(data["residual"]["mlp"]).shape == (3, seq)
    assert len(data["logit_lens_top"]) == 4 and len(data["logit_lens_top"][0]) == seq


def test_no_page_writes_the_other_files_and_lifts_the_pages_limit(folders, tmp_path):
    out = tmp_path / "out"
    argv = ["--model", str(folders["other"]), "--prompt", PROMPT, "--out", str(out), "--generate", "120", "--no-page"]
    assert main(argv) == 0  # 10 + 120 tokens: past the page's 128, within the model's 160
    assert sorted(path.name for path in out.iterdir()) == sorted(set(OUTPUT_FILES) - {"look_inside.html"})
    record = json.loads((out / "inspection.json").read_text(encoding="utf-8"))
    assert len(record["sequence"]) == record["prompt_length"] + 120 > PAGE_MAX_TOKENS


BAD_INPUTS = {
    "negative --generate": (["--generate", "-1"], "--generate must be 0 or more new tokens, got -1"),
    "--generate past the page's limit": (["--generate", str(PAGE_MAX_TOKENS)], "--generate 128 is past the page's"),
    "prompt and generation past the context": (["--generate", "60"], "come to 70; the model's context holds 64"),
    "prompt and generation past the page": (
        ["--model", "{other}", "--generate", "120"],
        f"come to 130; look_inside.html holds at most {PAGE_MAX_TOKENS}",
    ),
    "top-k of zero": (["--top-k", "0"], "--top-k must be at least 1, got 0"),
    "prompt that tokenizes to nothing": (["--model", "{drops}", "--prompt", "zzz"], "tokenizes to no tokens"),
    "out is a file": (["--out", "{file}"], "exists and is not a folder"),
    "model without attention": (["--model", "{mamba}"], "MambaForCausalLM has no attention weights to show"),
    "seed without sampling": (["--generate", "3", "--seed", "1"], "greedy generation needs no seed"),
    "sampling without --generate": (["--do-sample"], "--do-sample samples the tokens --generate N adds"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, folders, tmp_path, capsys):
    changes, expected = BAD_INPUTS[case]
    (tmp_path / "file").write_text("not a folder")
    places = {"file": tmp_path / "file", **{name: folders[name] for name in ("other", "drops", "mamba")}}
    args = {"--model": str(folders["gpt2edu"]), "--prompt": PROMPT, "--out": str(tmp_path / "out")}
    extra, items = [], iter(item.format(**places) for item in changes)
    for item in items:
        if item in args:
            args[item] = next(items)
        else:
            extra.append(item)
    argv = [item for pair in args.items() for item in pair] + extra
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ": error: " in err and expected in err, err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["file"]


# --- in Chromium -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium through Playwright, one per module; skipped with the reason where either is missing."""
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install playwright)"
    )
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def open_page(browser, path):
    """The page from disk in a context where every request is recorded and all but the page itself aborted."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    url, requests, errors = path.as_uri(), [], []

    def route(handle):
        requests.append(handle.request.url)
        handle.continue_() if handle.request.url == url else handle.abort()

    context.route("**/*", route)
    page = context.new_page()
    page.on("console", lambda message: errors.append(message.text) if message.type in ("error", "warning") else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(url)
    page.wait_for_selector("body[data-drawn-ms]")
    return page, requests, errors


def test_page_in_chromium_asks_for_nothing_and_a_head_shows_its_weights(browser, runs, tmp_path):
    path, record, _ = runs["gpt2edu"]
    page, requests, errors = open_page(browser, path)
    assert page.locator("#attention-grid canvas.thumb").count() == 2 * 4  # every block x head
    page.click('#attention-grid canvas[data-layer="1"][data-head="2"]')
    assert page.inner_text("#attention-large-title").startswith("block 1, head 2")
    cells = page.eval_on_selector_all(
        "#attention-map rect[data-key]",
        "rects => rects.map(r => [+r.dataset.query, +r.dataset.key, +r.dataset.weight])",
    )
    seq = len(record["sequence"])
    shown = torch.zeros(seq, seq, dtype=torch.float64)
    for query, key, weight in cells:
        shown[query, key] = weight
    assert len(cells) == seq * (seq + 1) // 2
    torch.testing.assert_close(shown, thousandths(record)[1, 2], atol=0, rtol=0)
    prompt_length = record["prompt_length"]  # inspection.json's float32 weights, the prompt's, as the PNG draws them
    float32 = torch.tensor(record["attentions"], dtype=torch.float64)[1, 2]
    torch.testing.assert_close(shown[:prompt_length, :prompt_length], float32, atol=1e-3, rtol=0)

    page.hover('#attention-map rect[data-query="5"][data-key="2"]')  # hovering a cell reads its weight
    readout = page.inner_text("#attention-readout")
    assert readout.startswith("query 5 ") and " key 2 " in readout and readout.endswith(shown_as(shown[5, 2].item()))

    page.click('#token-list .chip[data-position="3"]')  # choosing a query shows where it looks
    looks = page.eval_on_selector_all("#looks .chip", "chips => chips.map(c => +c.dataset.weight)")
    assert looks == thousandths(record)[1, 2, 3, :4].tolist()
    stream = page.eval_on_selector_all("#residual-table td.stream", "cells => cells.map(c => +c.textContent)")
    assert stream == [round(row[3], 3) for row in record["residual"]["stream"]]  # the residual stream at that token

    page.hover('#lens-table td[data-layer="2"][data-position="4"]')  # hovering a lens cell lists its top 5
    readout = page.inner_text("#lens-readout")
    top = record["logit_lens_top"][2][4]
    assert [readout.count(f"{rank}. ") for rank in range(1, 6)] == [1] * 5
    assert all(shown_as(item["prob"]) in readout for item in top)
    page.click(f'#token-list .chip[data-position="{prompt_length - 1}"]')
    page.screenshot(path=tmp_path / "look_inside_page.png", full_page=True)
    if os.environ.get("GPT2EDU_SCREENSHOTS") == "1":  # the README's picture, taken here on request only
        shutil.copyfile(tmp_path / "look_inside_page.png", SCREENSHOT)
    assert requests == [path.as_uri()] and errors == []

    other, requests, errors = open_page(browser, runs["other"][0])
    assert other.locator("#attention-grid canvas.thumb").count() == 3 * 2
    chips = other.eval_on_selector_all("#token-list .chip", "chips => chips.map(c => c.textContent)")
    assert chips[:5] == ["Every", "␣effort", "␣moves", "␣you", "↵"]
    assert chips == [token.replace(" ", "␣").replace("\n", "↵") for token in runs["other"][1]["sequence"]]
    assert other.locator("#lens-table td").count() == 4 * len(runs["other"][1]["sequence"])
    assert len(requests) == 1 and errors == []


def processed(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """generate(do_sample=True)'s probabilities: transformers' warpers in generate()'s order, then softmax."""
    scores = logits[None]
    if temperature != 1.0:
        scores = TemperatureLogitsWarper(temperature)(None, scores)
    if top_k != 0:
        scores = TopKLogitsWarper(top_k=top_k, min_tokens_to_keep=1)(None, scores)
    if top_p < 1.0:
        scores = TopPLogitsWarper(top_p=top_p, min_tokens_to_keep=1)(None, scores)
    return scores[0].softmax(dim=-1)


SAMPLING_SETTINGS = [(0.7, 0, 1.0), (1.6, 4, 1.0), (1.0, 0, 0.5), (0.8, 20, 0.9), (2.5, 0, 0.3)]


def test_sampling_controls_give_transformers_probabilities(browser, runs):
    path, record, _ = runs["gpt2edu"]
    page, _, errors = open_page(browser, path)
    for settings in SAMPLING_SETTINGS:  # (temperature, top-k, top-p), each set as a user sets it
        temperature, top_k, top_p = settings
        page.fill("#temperature", str(temperature))
        page.fill("#top-k", str(top_k))
        page.fill("#top-p", str(top_p))
        rows = page.eval_on_selector_all(
            "#next-table tr.next-row", "rows => rows.map(r => [+r.dataset.tokenId, +r.dataset.prob])"
        )
        expected = processed(torch.tensor(record["next_logits"]), temperature, top_k, top_p)
        assert [token_id for token_id, _ in rows] == [item["token_id"] for item in record["next_token"]]
        got = torch.tensor([prob for _, prob in rows], dtype=torch.float32)
        torch.testing.assert_close(got, expected[[token_id for token_id, _ in rows]], rtol=1e-5, atol=1e-7)
        if top_k or top_p < 1:  # the setting cuts the vocabulary: the page agrees on which tokens remain
            kept = int(page.inner_text("#next-summary").split(": ", 1)[1].split(" of ")[0])
            assert kept == int((expected > 0).sum()) < expected.numel(), settings
    assert errors == []


def test_generation_slider_shows_generates_tokens(browser, runs):
    path, record, _ = runs["gpt2edu"]
    page, _, errors = open_page(browser, path)
    steps = record["generation"]["steps"]
    for number, step in enumerate(steps, start=1):
        page.fill("#step", str(number))
        shown = page.locator("#step-token")
        assert int(shown.get_attribute("data-token-id")) == step["token_id"]
        assert int(shown.get_attribute("data-position")) == record["prompt_length"] + number - 1
        chosen = page.eval_on_selector_all("#step-table tr.chosen", "rows => rows.map(r => +r.dataset.tokenId)")
        assert chosen == [step["token_id"]]  # greedy: the likeliest of the distribution it was drawn from
        looks = page.eval_on_selector_all("#step-looks .chip", "chips => chips.map(c => +c.dataset.weight)")
        assert looks == thousandths(record)[0, 0, step["position"], : step["position"] + 1].tolist()  # block 0, head 0
    assert errors == []
