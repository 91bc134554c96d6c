"""The book's chapter 7 on the ecosystem: the Alpaca prompt as a chat template, TRL's SFTTrainer, the pipeline.

Against the book's own pipeline (tests/book_ch07_reference.py: format_input, custom_collate_fn, exercise 7.2's masked
collate, calc_loss_batch) and tiktoken's own GPT-2 encoding.
"""

import json

import pytest
import tiktoken
import torch
from book_ch07_reference import calc_loss_batch, collate, format_input, training_text
from conftest import SHARED, tiny_config
from seed_reference import seed_model
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

from convert_checkpoint import main as convert
from modeling_gpt2edu import GPT2EduForCausalLM
from tokenization_gpt2edu import (
    CHAT_TEMPLATE_FILE,
    add_chat_template,
    alpaca_messages,
    gpt2_tokenizer,
    read_chat_template,
    save_gpt2_tokenizer,
    tiktoken_encoding,
)

trl = pytest.importorskip("trl", reason="TRL is a dev extra (pip install -e '.[dev]')")
datasets = pytest.importorskip("datasets")

# Entries in the shape of the book's instruction-data.json: with an input, and without one ("").
ENTRIES = [
    {
        "instruction": "Rewrite the sentence using a simile.",
        "input": "The car is very fast.",
        "output": "The car is as fast as lightning.",
    },
    {"instruction": "What is the capital of France?", "input": "", "output": "The capital of France is Paris."},
    {
        "instruction": "Convert the active sentence to passive: 'The chef cooks the meal every day.'",
        "input": "",
        "output": "The meal is cooked by the chef every day.",
    },
    {
        "instruction": "Sort the following words alphabetically.",
        "input": "banana, apple, cherry",
        "output": "apple, banana, cherry",
    },
]
RESPONSE_HEADER = "\n\n### Response:\n"  # what the book writes after format_input, before the response
OPENING = "Below is an instruction that describes a task. Write a response that appropriately completes the request."


def prompt_of(entry: dict) -> dict:
    return {name: value for name, value in entry.items() if name != "output"}


@pytest.fixture(scope="module")
def reference_encoding() -> tiktoken.Encoding:
    """tiktoken's own `gpt2` encoding from its cache beside the repository, else built from the shipped BPE files."""
    cache = SHARED / "tiktoken-cache"
    if cache.is_dir():
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
            return tiktoken.get_encoding("gpt2")
    return tiktoken_encoding()


@pytest.fixture(scope="module")
def chat_tokenizer():
    """GPT-2's tokenizer with the Alpaca template, as an instruction model's."""
    return gpt2_tokenizer(chat_template="alpaca")


@pytest.fixture(scope="module")
def chat_folder(tmp_path_factory, chat_tokenizer):
    folder = tmp_path_factory.mktemp("alpaca-tokenizer")
    chat_tokenizer.save_pretrained(folder)  # writes chat_template.jinja beside the tokenizer
    return folder


def sft_trainer(tmp_path, tokenizer, dataset, model=None, **options):
    if model is None:
        torch.manual_seed(0)
        model = GPT2EduForCausalLM(tiny_config(vocab_size=50257, bos_token_id=50256, eos_token_id=50256))
    # bf16=False: SFTConfig's default autocasts to bfloat16, even on a CPU; the book trains in float32.
    args = trl.SFTConfig(
        output_dir=str(tmp_path), per_device_train_batch_size=len(dataset), learning_rate=1e-2,
        lr_scheduler_type="constant", logging_steps=10, save_strategy="no", report_to=[], use_cpu=True,
        disable_tqdm=True, bf16=False, gradient_checkpointing=False, **options,
    )  # fmt: skip
    return trl.SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)


@pytest.fixture(scope="module")
def instruction_model(tmp_path_factory, chat_tokenizer):
    """A tiny gpt2edu trained by SFTTrainer on one conversation until it answers it, saved as a model folder."""
    dataset = datasets.Dataset.from_dict({"messages": [alpaca_messages(ENTRIES[0])]})
    trainer = sft_trainer(tmp_path_factory.mktemp("sft"), chat_tokenizer, dataset, max_steps=30)
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    result = trainer.train()
    assert all(not torch.equal(p, before[name]) for name, p in trainer.model.named_parameters())
    assert result.training_loss < 10
    folder = tmp_path_factory.mktemp("instruction-model")
    trainer.save_model(str(folder))  # the model, and the tokenizer with chat_template.jinja
    return trainer.model.eval(), folder


@pytest.mark.parametrize("entry", ENTRIES[:2], ids=["with_input", "without_input"])
def test_template_writes_the_books_prompt_and_training_text(chat_tokenizer, reference_encoding, entry):
    prompt = chat_tokenizer.apply_chat_template(
        alpaca_messages(prompt_of(entry)), add_generation_prompt=True, tokenize=False
    )
    assert prompt == format_input(entry) + RESPONSE_HEADER
    conversation = chat_tokenizer.apply_chat_template(alpaca_messages(entry), tokenize=False)
    assert conversation == training_text(entry) + "<|endoftext|>"
    # The ids: the book's encode(text) + [50256] (its collate appends the <|endoftext|>), as tiktoken's.
    ids = chat_tokenizer.apply_chat_template(alpaca_messages(entry), tokenize=True, return_dict=True)["input_ids"]
    assert ids == reference_encoding.encode(training_text(entry)) + [50256]
    prompt_ids = chat_tokenizer.apply_chat_template(
        alpaca_messages(prompt_of(entry)), add_generation_prompt=True, tokenize=True, return_dict=True
    )["input_ids"]
    assert prompt_ids == reference_encoding.encode(format_input(entry) + RESPONSE_HEADER)


def test_the_input_is_a_second_user_message(chat_tokenizer):
    instruction, text, output = ENTRIES[0]["instruction"], ENTRIES[0]["input"], ENTRIES[0]["output"]
    messages = [
        {"role": "user", "content": instruction},
        {"role": "user", "content": text},
        {"role": "assistant", "content": output},
    ]
    assert alpaca_messages(ENTRIES[0]) == messages
    assert chat_tokenizer.apply_chat_template(messages, tokenize=False) == training_text(ENTRIES[0]) + "<|endoftext|>"


def test_system_message_replaces_the_opening_sentence_and_empty_input_is_left_out(chat_tokenizer):
    messages = [{"role": "system", "content": "You answer in French."}, *alpaca_messages(prompt_of(ENTRIES[1]))]
    prompt = chat_tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert format_input(ENTRIES[1]).startswith(OPENING)
    assert prompt == "You answer in French." + format_input(ENTRIES[1])[len(OPENING) :] + RESPONSE_HEADER
    with_empty_input = [*alpaca_messages(prompt_of(ENTRIES[1])), {"role": "user", "content": ""}]
    assert chat_tokenizer.apply_chat_template(with_empty_input, tokenize=False) == format_input(ENTRIES[1])
    with pytest.raises(Exception, match="no place for a tool message"):
        chat_tokenizer.apply_chat_template([{"role": "tool", "content": "42"}], tokenize=False)


def test_saved_template_is_the_packaged_file_and_tokenizers_get_it(tmp_path, chat_folder):
    template = read_chat_template("alpaca")
    assert (chat_folder / CHAT_TEMPLATE_FILE).read_text(encoding="utf-8") == template
    assert AutoTokenizer.from_pretrained(chat_folder).chat_template == template
    assert "chat_template" not in json.loads((chat_folder / "tokenizer_config.json").read_text())
    # A folder written with the template, and an existing folder given it: its other files stay as they were.
    written, existing = tmp_path / "written", tmp_path / "existing"
    written.mkdir(), existing.mkdir()
    save_gpt2_tokenizer(written, chat_template="alpaca")
    assert (written / CHAT_TEMPLATE_FILE).read_text(encoding="utf-8") == template
    save_gpt2_tokenizer(existing)
    plain = AutoTokenizer.from_pretrained(existing)
    assert plain.chat_template is None
    before = {p.name: p.read_bytes() for p in existing.iterdir()}
    assert add_chat_template(existing) is None
    after = {p.name: p.read_bytes() for p in existing.iterdir()}
    assert after == {**before, CHAT_TEMPLATE_FILE: template.encode()}
    assert AutoTokenizer.from_pretrained(existing).chat_template == template
    # A tokenizer in Python.
    assert add_chat_template(plain).chat_template == template
    with pytest.raises(ValueError, match="unknown chat template 'chatml'; gpt2edu ships: alpaca"):
        read_chat_template("chatml")


def test_a_model_or_tokenizer_that_cannot_hold_the_template_is_refused(tmp_path, chat_tokenizer):
    save_gpt2_tokenizer(tmp_path)
    GPT2EduForCausalLM(tiny_config(vocab_size=101)).save_pretrained(tmp_path)  # GPT-2's tokenizer, 101 tokens
    with pytest.raises(ValueError, match=r"ends each response with <\|endoftext\|> \(id 50256\), but the model's "):
        add_chat_template(tmp_path)
    assert not (tmp_path / CHAT_TEMPLATE_FILE).exists()
    no_eos = AutoTokenizer.from_pretrained(tmp_path)
    no_eos.eos_token = None
    with pytest.raises(ValueError, match="needs an end-of-text token"):
        add_chat_template(no_eos)


def book_batch(encoding, masked_through=None):
    """The book's batch of ENTRIES: custom_collate_fn, or exercise 7.2's when the prompt ends at `masked_through`."""
    items = [encoding.encode(training_text(entry)) for entry in ENTRIES]
    if masked_through is None:
        return collate(items)
    return collate(items, [len(encoding.encode(masked_through(entry))) for entry in ENTRIES])


def trl_loss(trainer) -> torch.Tensor:
    """TRL's loss of its own collated batch of the whole training set, in order (what a training step computes)."""
    rows = [{name: row[name] for name in ("input_ids", "labels")} for row in trainer.train_dataset]
    batch = trainer.data_collator(rows)
    trainer.model.eval()
    with torch.no_grad():
        return trainer.compute_loss(trainer.model, batch)


# How much of each row the loss scores: what masks the prompt up to where (None: nothing masked).
MASKINGS = {
    "prompt_scored": None,  # the book's chapter 7: every target scored, the first <|endoftext|> included
    "assistant_only_loss": format_input,  # exercise 7.2: targets[:len(format_input) - 1] = -100
    "completion_only_loss": lambda entry: format_input(entry) + RESPONSE_HEADER,  # the header not scored either
}


@pytest.mark.parametrize("masking", MASKINGS)
def test_sft_loss_equals_the_books_loss(tmp_path, chat_tokenizer, reference_encoding, instruction_model, masking):
    model, _ = instruction_model  # trained weights: the prompt's and the response's losses differ clearly
    if masking == "completion_only_loss":  # a prompt-completion dataset (TRL renders the prompt with the header)
        prompts = [alpaca_messages(prompt_of(entry)) for entry in ENTRIES]
        completions = [alpaca_messages(entry)[-1:] for entry in ENTRIES]
        dataset = datasets.Dataset.from_dict({"prompt": prompts, "completion": completions})
    else:
        dataset = datasets.Dataset.from_dict({"messages": [alpaca_messages(entry) for entry in ENTRIES]})
    options = {"assistant_only_loss": True} if masking == "assistant_only_loss" else {}
    trainer = sft_trainer(tmp_path, chat_tokenizer, dataset, model=model, **options)
    with torch.no_grad():
        book_losses = {
            name: calc_loss_batch(*book_batch(reference_encoding, through), model)
            for name, through in MASKINGS.items()
        }
    loss = trl_loss(trainer)
    torch.testing.assert_close(loss, book_losses[masking])
    assert all(abs(loss - other) > 1e-2 for name, other in book_losses.items() if name != masking), book_losses


def test_pipeline_answers_in_the_books_format_and_stops_at_endoftext(instruction_model, reference_encoding):
    _, folder = instruction_model
    generator = pipeline("text-generation", model=str(folder))
    messages = alpaca_messages(prompt_of(ENTRIES[0]))
    reply = generator(messages, max_new_tokens=30, do_sample=False)[0]["generated_text"]
    assert reply[:-1] == messages and reply[-1] == {"role": "assistant", "content": ENTRIES[0]["output"]}
    # The ids: the book's prompt as the pipeline built it, the answer, and the <|endoftext|> it stopped at, well
    # before max_new_tokens.
    ids = generator(messages, max_new_tokens=30, do_sample=False, return_tensors=True)[0]["generated_token_ids"]
    assert list(ids) == reference_encoding.encode(training_text(ENTRIES[0])) + [50256]


def test_the_books_chapter7_state_dict_converts_into_a_folder_with_the_template(tmp_path, reference_encoding):
    # The book saves model.state_dict() of GPT-2 medium (16 heads, qkv_bias from OpenAI's weights): the same, tiny.
    book_model = seed_model(vocab_size=50257, context_length=64, emb_dim=64, n_heads=16, qkv_bias=True)
    torch.save(book_model.state_dict(), tmp_path / "gpt2-medium355M-sft.pth")
    out = tmp_path / "gpt2edu-sft"
    assert (
        convert([str(tmp_path / "gpt2-medium355M-sft.pth"), str(out), "--n-heads", "16", "--chat-template", "alpaca"])
        == 0
    )
    assert (out / CHAT_TEMPLATE_FILE).read_text(encoding="utf-8") == read_chat_template("alpaca")
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    assert model.config.n_heads == 16
    prompt = alpaca_messages(prompt_of(ENTRIES[0]))
    ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    assert ids["input_ids"][0].tolist() == reference_encoding.encode(format_input(ENTRIES[0]) + RESPONSE_HEADER)
    with torch.no_grad():
        torch.testing.assert_close(model(ids["input_ids"]).logits, book_model(ids["input_ids"]))
    # Converting that folder on (here to transformers' GPT-2) keeps its template.
    assert convert([str(out), str(tmp_path / "gpt2-sft"), "--to", "gpt2"]) == 0
    assert AutoTokenizer.from_pretrained(tmp_path / "gpt2-sft").chat_template == read_chat_template("alpaca")


def book_classifier_state_dict() -> dict[str, torch.Tensor]:
    """The book's chapter-6 classifier: its out_head swapped for Linear(emb_dim, 2), with a bias."""
    state_dict = seed_model().state_dict()
    state_dict["out_head.weight"], state_dict["out_head.bias"] = torch.randn(2, 32), torch.randn(2)
    return state_dict


@pytest.mark.parametrize(
    "out_name, state_dict, message",
    [
        ("out", lambda: seed_model().state_dict(), "--chat-template alpaca: a chat template ends each response with "
         "<|endoftext|> (id 50256), but the model's vocabulary has only 101 tokens (vocab_size 101)"),
        ("out", book_classifier_state_dict, "--chat-template alpaca is for a language model that follows "
         "instructions; seed checkpoint"),
        ("out.pth", lambda: seed_model().state_dict(), "--chat-template is written beside a model folder's "
         "tokenizer; a seed checkpoint has no tokenizer"),
        ("out.gguf", lambda: seed_model().state_dict(), "a GGUF file has no tokenizer"),
    ],
    ids=["vocabulary_without_endoftext", "classifier", "seed_checkpoint", "gguf"],
)  # fmt: skip
def test_a_chat_template_where_it_cannot_go_is_refused(tmp_path, capsys, out_name, state_dict, message):
    torch.save(state_dict(), tmp_path / "model.pth")
    args = ["--n-heads", "4", "--chat-template", "alpaca"]
    assert convert([str(tmp_path / "model.pth"), str(tmp_path / out_name), *args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("convert_checkpoint.py: error: ") and message in lines[0], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pth"]
