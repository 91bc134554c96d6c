"""The task heads (sequence and token classification, question answering) against transformers' GPT-2 heads.

Each gpt2edu head gets the weights of a transformers GPT-2 head (the body mapped with the converter's table, the head
copied across) and must give its logits and loss: with right, left and no padding, for the three problem types of
sequence classification, with -100 labels. Then the heads where transformers uses them: loading a causal-LM folder,
the pipelines, remote code and Trainer.
"""

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_config
from transformers import (
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    GPT2Config,
    GPT2ForQuestionAnswering,
    GPT2ForSequenceClassification,
    GPT2ForTokenClassification,
    Trainer,
    TrainingArguments,
    pipeline,
)
from transformers.testing_utils import CaptureLogger
from transformers.utils import logging

from convert_checkpoint import gpt2_config_to_gpt2edu, gpt2_to_gpt2edu_state_dict
from modeling_gpt2edu import (
    GPT2EduForCausalLM,
    GPT2EduForQuestionAnswering,
    GPT2EduForSequenceClassification,
    GPT2EduForTokenClassification,
)

PAD = 100  # the tiny vocabulary's last token, as 50256 is GPT-2's
LENGTHS = [9, 6, 4]  # one row of each batch fills it; the others are padded
PROJECT_MODULES = ["modeling_gpt2edu", "configuration_gpt2edu", "tokenization_gpt2edu", "convert_checkpoint"]
# transformers' GPT-2 head -> ours, and the head layer's name in each
TWINS = {
    GPT2EduForSequenceClassification: (GPT2ForSequenceClassification, {"score": "score"}),
    GPT2EduForTokenClassification: (GPT2ForTokenClassification, {"score": "classifier"}),
    GPT2EduForQuestionAnswering: (GPT2ForQuestionAnswering, {"qa_outputs": "qa_outputs"}),
}


def twins(head_class, seed: int = 0, **fields):
    """A transformers GPT-2 head and the gpt2edu head with its weights, both in eval mode."""
    gpt2_class, head_names = TWINS[head_class]
    torch.manual_seed(seed)
    gpt2_config = GPT2Config(vocab_size=101, n_positions=64, n_embd=32, n_head=4, n_layer=2, bos_token_id=PAD)
    gpt2_config.eos_token_id = gpt2_config.pad_token_id = PAD
    for name, value in fields.items():
        setattr(gpt2_config, name, value)
    reference = gpt2_class(gpt2_config).eval()
    config = gpt2_config_to_gpt2edu(gpt2_config)
    for name, value in fields.items():
        setattr(config, name, value)
    config.pad_token_id = PAD
    model = head_class(config).eval()
    state_dict = gpt2_to_gpt2edu_state_dict(reference.state_dict(), config.n_layers)
    state_dict = {name: tensor for name, tensor in state_dict.items() if name.startswith("model.")}  # the body
    for ours, theirs in head_names.items():
        state_dict.update({f"{ours}.{p}": t for p, t in getattr(reference, theirs).state_dict().items()})
    if getattr(config, "classifier_bias", False):
        state_dict["score.bias"] = torch.zeros(config.num_labels)  # GPT-2's score has none: a zero bias is the same
    model.load_state_dict(state_dict, strict=True)
    return reference, model


def batch(padding: str, seed: int = 0):
    """Token ids (3, 9) without the pad token, padded as asked, with the mask and the positions GPT-2 should use."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, PAD, (len(LENGTHS), max(LENGTHS)), generator=generator)
    if padding == "none":
        return ids, None, None
    mask = torch.zeros_like(ids)
    for row, length in enumerate(LENGTHS):
        real = slice(0, length) if padding == "right" else slice(max(LENGTHS) - length, None)
        mask[row, real] = 1
    ids = ids.masked_fill(mask == 0, PAD)
    # gpt2edu counts positions from each row's first real token; transformers' GPT-2 is told them (as generate does)
    return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)


def close(actual, expected):
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)


# --- sequence classification ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("padding", ["none", "right", "left"])
@pytest.mark.parametrize("problem", ["single_label_classification", "multi_label_classification", "regression"])
def test_sequence_classification_equals_gpt2s(padding, problem):
    num_labels = 1 if problem == "regression" else 3
    reference, model = twins(GPT2EduForSequenceClassification, num_labels=num_labels)
    ids, mask, positions = batch(padding)
    labels = {
        "single_label_classification": torch.tensor([2, 0, 1]),
        "multi_label_classification": torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]]),
        "regression": torch.tensor([0.5, -1.0, 2.0]),
    }[problem]
    with torch.no_grad():
        expected = reference(ids, attention_mask=mask, position_ids=positions, labels=labels)
        actual = model(ids, attention_mask=mask, labels=labels)
    assert model.config.problem_type == reference.config.problem_type == problem  # inferred from the labels alike
    close(actual.logits, expected.logits)
    close(actual.loss, expected.loss)


@pytest.mark.parametrize("padding", ["right", "left"])
def test_each_text_is_read_at_its_last_real_token(padding):
    """A padded batch classifies each row as that text alone, unpadded (batch of one, no pad token involved)."""
    _, model = twins(GPT2EduForSequenceClassification, num_labels=3)
    ids, mask, _ = batch(padding)
    with torch.no_grad():
        logits = model(ids, attention_mask=mask).logits
        for row, length in enumerate(LENGTHS):
            alone = ids[row, mask[row].bool()][None]
            assert alone.shape[1] == length
            close(logits[row], model(alone).logits[0])


def test_single_label_loss_ignores_minus_100():
    reference, model = twins(GPT2EduForSequenceClassification, num_labels=3)
    ids, mask, positions = batch("right")
    labels = torch.tensor([-100, 0, 2])
    with torch.no_grad():
        output = model(ids, attention_mask=mask, labels=labels)
        expected = reference(ids, attention_mask=mask, position_ids=positions, labels=labels).loss
    close(output.loss, F.cross_entropy(output.logits[1:], labels[1:]))
    close(output.loss, expected)


def test_batch_without_a_pad_token_is_gpt2s_error():
    reference, model = twins(GPT2EduForSequenceClassification, num_labels=2)
    reference.config.pad_token_id = model.config.pad_token_id = None
    ids = torch.randint(0, PAD, (2, 5))
    with pytest.raises(ValueError) as gpt2_error:
        reference(ids)
    with pytest.raises(ValueError) as our_error, torch.no_grad():
        model(ids)
    assert str(our_error.value).startswith(str(gpt2_error.value))  # GPT-2's words, then the fix
    assert "pad_token_id" in str(our_error.value)
    with torch.no_grad():  # a single row needs no pad token: its last token is read, in both
        close(model(ids[:1]).logits, reference(ids[:1]).logits)


def test_last_position_pooling_is_the_books_logits_at_minus_1():
    """classifier_pooling="last_position": the book's `model(x)[:, -1, :]`, whatever token the row ends with."""
    reference, model = twins(GPT2EduForSequenceClassification, num_labels=2)
    model.config.classifier_pooling = "last_position"
    ids, mask, _ = batch("right")
    with torch.no_grad():
        books = reference.score(reference.transformer(ids).last_hidden_state[:, -1, :])  # no mask, as the book
        close(model(ids).logits, books)
        model.config.classifier_pooling = "last_non_padding"
        gpt2s = model(ids).logits
    assert not torch.allclose(gpt2s[1:], books[1:], atol=1e-3)  # the padded rows: another token is read
    close(gpt2s[0], books[0])  # the full row ends with a real token


def test_classifier_bias_adds_the_books_bias():
    reference, model = twins(GPT2EduForSequenceClassification, num_labels=2, classifier_bias=True)
    assert reference.score.bias is None and model.score.bias.shape == (2,)
    with torch.no_grad():
        model.score.bias.copy_(torch.tensor([0.25, -1.5]))
        ids, mask, positions = batch("left")
        expected = reference(ids, attention_mask=mask, position_ids=positions).logits + model.score.bias
        close(model(ids, attention_mask=mask).logits, expected)
    assert GPT2EduForSequenceClassification(tiny_config()).score.bias is None  # GPT-2's, by default


# --- token classification and question answering --------------------------------------------------------------------


@pytest.mark.parametrize("padding", ["none", "right", "left"])
def test_token_classification_equals_gpt2s(padding):
    reference, model = twins(GPT2EduForTokenClassification, num_labels=5)
    ids, mask, positions = batch(padding)
    labels = torch.randint(0, 5, ids.shape, generator=torch.Generator().manual_seed(1))
    if mask is not None:
        labels = labels.masked_fill(mask == 0, -100)  # padding is not scored
    with torch.no_grad():
        expected = reference(ids, attention_mask=mask, position_ids=positions, labels=labels)
        actual = model(ids, attention_mask=mask, labels=labels)
    real = slice(None) if mask is None else mask.bool()
    close(actual.logits[real], expected.logits[real])
    close(actual.loss, expected.loss)
    scored = labels != -100
    close(actual.loss, F.cross_entropy(actual.logits[scored], labels[scored]))  # -100 ignored


@pytest.mark.parametrize("padding", ["none", "right", "left"])
def test_question_answering_equals_gpt2s(padding):
    reference, model = twins(GPT2EduForQuestionAnswering)
    ids, mask, positions = batch(padding)
    starts, ends = torch.tensor([1, 0, 20]), torch.tensor([3, 2, 30])  # beyond the row: clamped and ignored, as GPT-2
    with torch.no_grad():
        expected = reference(
            ids, attention_mask=mask, position_ids=positions, start_positions=starts, end_positions=ends
        )
        actual = model(ids, attention_mask=mask, start_positions=starts, end_positions=ends)
    real = slice(None) if mask is None else mask.bool()
    close(actual.start_logits[real], expected.start_logits[real])
    close(actual.end_logits[real], expected.end_logits[real])
    close(actual.loss, expected.loss)


# --- where transformers uses them -----------------------------------------------------------------------------------

HEADS = {
    AutoModelForSequenceClassification: (GPT2EduForSequenceClassification, {"score.weight"}),
    AutoModelForTokenClassification: (GPT2EduForTokenClassification, {"score.weight", "score.bias"}),
    AutoModelForQuestionAnswering: (GPT2EduForQuestionAnswering, {"qa_outputs.weight", "qa_outputs.bias"}),
}


@pytest.mark.parametrize("tie", [False, True])
def test_a_causal_lm_folder_loads_into_each_head_with_only_the_head_missing(tmp_path, tie):
    torch.manual_seed(0)
    causal_lm = GPT2EduForCausalLM(tiny_config(tie_word_embeddings=tie))
    causal_lm.save_pretrained(tmp_path)
    body = causal_lm.model.state_dict()
    for auto_class, (head_class, head_keys) in HEADS.items():
        with CaptureLogger(logging.get_logger("transformers.modeling_utils")) as captured:
            model, info = auto_class.from_pretrained(tmp_path, num_labels=2, output_loading_info=True)
        assert type(model) is head_class
        assert set(info["missing_keys"]) == head_keys, info
        assert not info["unexpected_keys"] and not info["mismatched_keys"] and not info["error_msgs"], info
        assert "UNEXPECTED" not in captured.out and "out_head" not in captured.out, captured.out
        assert all(name in captured.out for name in head_keys), captured.out  # the new head is reported, as missing
        for name, tensor in model.model.state_dict().items():
            assert torch.equal(tensor, body[name]), name


@pytest.fixture(scope="session")
def head_folders(tmp_path_factory):
    """A saved folder of each head (GPT-2's vocabulary, tiny), with a tokenizer that pads with <|endoftext|>."""
    from tokenization_gpt2edu import gpt2_tokenizer

    padding_tokenizer = gpt2_tokenizer()
    padding_tokenizer.pad_token = "<|endoftext|>"  # the book pads with 50256
    labels = {
        GPT2EduForSequenceClassification: ["ham", "spam"],
        GPT2EduForTokenClassification: ["O", "B-NAME", "I-NAME"],
        GPT2EduForQuestionAnswering: ["LABEL_0", "LABEL_1"],
    }
    folders = {}
    for head_class, names in labels.items():
        torch.manual_seed(0)
        config = tiny_config(vocab_size=50257, bos_token_id=50256, eos_token_id=50256, pad_token_id=50256)
        config.id2label = dict(enumerate(names))
        config.label2id = {name: i for i, name in enumerate(names)}
        folder = tmp_path_factory.mktemp(head_class.__name__)
        head_class(config).eval().save_pretrained(folder)
        padding_tokenizer.save_pretrained(folder)
        folders[head_class] = folder
    return folders


def test_head_folders_say_their_auto_class(head_folders):
    for auto_class, (head_class, _) in HEADS.items():
        config = json.loads((head_folders[head_class] / "config.json").read_text())
        assert config["architectures"] == [head_class.__name__]
        assert config["auto_map"][auto_class.__name__] == f"modeling_gpt2edu.{head_class.__name__}"


def test_text_classification_pipeline_batches_with_the_label_names(head_folders):
    folder = head_folders[GPT2EduForSequenceClassification]
    classifier = pipeline("text-classification", model=str(folder), batch_size=2)
    texts = ["You won a prize! Call now", "See you at lunch", "Free entry in a weekly competition to win tickets"]
    results = classifier(texts)
    model, tokenizer = classifier.model, classifier.tokenizer
    for text, result in zip(texts, results, strict=True):
        with torch.no_grad():
            probs = model(**tokenizer(text, return_tensors="pt")).logits.softmax(-1)[0]  # each text alone
        assert result["label"] == model.config.id2label[int(probs.argmax())] and result["label"] in ("ham", "spam")
        assert result["score"] == pytest.approx(float(probs.max()), abs=1e-5)


def test_zero_shot_classification_pipeline(head_folders, tmp_path):
    model = GPT2EduForSequenceClassification.from_pretrained(head_folders[GPT2EduForSequenceClassification])
    names = ["contradiction", "neutral", "entailment"]  # an NLI model's labels
    model.config.id2label, model.config.label2id = dict(enumerate(names)), {n: i for i, n in enumerate(names)}
    model.score = torch.nn.Linear(model.config.emb_dim, 3, bias=False)
    model.config.num_labels = 3
    classifier = pipeline("zero-shot-classification", model=model, tokenizer=str(head_folders[model.__class__]))
    text, candidates = "The match went to extra time.", ["sports", "politics", "cooking"]
    result = classifier(text, candidate_labels=candidates)
    with torch.no_grad():
        pairs = [classifier.tokenizer(text, f"This example is {c}.", return_tensors="pt") for c in candidates]
        entailment = torch.stack([model(**pair).logits[0, 2] for pair in pairs])
    expected = dict(zip(candidates, entailment.softmax(-1).tolist(), strict=True))
    assert set(result["labels"]) == set(candidates)
    for label, score in zip(result["labels"], result["scores"], strict=True):
        assert score == pytest.approx(expected[label], abs=1e-5)


def test_token_classification_pipeline(head_folders):
    tagger = pipeline("token-classification", model=str(head_folders[GPT2EduForTokenClassification]))
    text = "Sebastian wrote the book in Madison"
    entities = tagger(text)
    model, tokenizer = tagger.model, tagger.tokenizer
    with torch.no_grad():
        probs = model(**tokenizer(text, return_tensors="pt")).logits.softmax(-1)[0]
    expected = [
        (index, model.config.id2label[int(p.argmax())], float(p.max()))
        for index, p in enumerate(probs)
        if model.config.id2label[int(p.argmax())] != "O"
    ]
    assert expected, "the random tagger tags no token: choose another seed"
    assert [(e["index"], e["entity"]) for e in entities] == [(i, label) for i, label, _ in expected]
    assert [e["score"] for e in entities] == pytest.approx([score for *_, score in expected], abs=1e-5)


def test_head_folders_load_with_trust_remote_code_without_the_project(head_folders, saved_model, tmp_path):
    expected = {}
    ids = torch.tensor([[464, 3290, 318, 257, 1049]])
    for auto_class, (head_class, _) in HEADS.items():
        with torch.no_grad():
            output = head_class.from_pretrained(head_folders[head_class]).eval()(ids)
        expected[auto_class.__name__] = [str(head_folders[head_class]), output[0]]
    torch.save(expected, tmp_path / "expected.pt")
    script = f"""
import sys
sys.modules.update({{name: None for name in {PROJECT_MODULES!r}}})  # the project cannot be imported here
import torch
import transformers
from transformers import pipeline
expected = torch.load("expected.pt")
ids = torch.tensor({ids.tolist()!r})
for auto_name, (folder, first_output) in expected.items():
    model = getattr(transformers, auto_name).from_pretrained(folder, trust_remote_code=True).eval()
    assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
    with torch.no_grad():
        torch.testing.assert_close(model(ids)[0], first_output)
# A language model's folder (its auto_map names the heads too) loads into each head: the body is the folder's.
language_model = {str(saved_model[1])!r}
body = transformers.AutoModel.from_pretrained(language_model, trust_remote_code=True).eval()
for auto_name in expected:
    model = getattr(transformers, auto_name).from_pretrained(language_model, trust_remote_code=True).eval()
    assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
    with torch.no_grad():
        torch.testing.assert_close(model.model(ids).last_hidden_state, body(ids).last_hidden_state)
classifier = pipeline("text-classification", model=expected["AutoModelForSequenceClassification"][0],
                      trust_remote_code=True, batch_size=2)
labels = [result["label"] for result in classifier(["Win a prize now", "Lunch at noon?", "Call me"])]
assert set(labels) <= {{"ham", "spam"}}, labels
print("remote code OK")
"""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["HF_MODULES_CACHE"] = str(tmp_path / "hf-modules")
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "remote code OK" in result.stdout


# --- Trainer -------------------------------------------------------------------------------------------------------


def test_trainer_fine_tunes_a_classifier_well_above_chance(tmp_path):
    """An easy task the test makes: does the text hold token 7? Rows right-padded with the pad token, as the book's."""
    generator = torch.Generator().manual_seed(0)

    def examples(count: int) -> list[dict]:
        rows = []
        for i in range(count):
            length = int(torch.randint(4, 13, (1,), generator=generator))
            ids = torch.randint(8, PAD, (length,), generator=generator)
            label = i % 2
            if label:
                ids[torch.randint(0, length, (1,), generator=generator)] = 7
            padded = F.pad(ids, (0, 12 - length), value=PAD)
            rows.append({"input_ids": padded, "attention_mask": (torch.arange(12) < length).long(), "labels": label})
        return rows

    train, test = examples(512), examples(128)
    torch.manual_seed(0)
    model = GPT2EduForSequenceClassification(tiny_config(pad_token_id=PAD, num_labels=2, drop_rate=0.0))
    args = TrainingArguments(
        output_dir=str(tmp_path),
        num_train_epochs=5,
        per_device_train_batch_size=16,
        learning_rate=1e-2,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
    )
    Trainer(model=model, args=args, train_dataset=train).train()
    model.eval()
    with torch.no_grad():
        inputs = {key: torch.stack([torch.as_tensor(row[key]) for row in test]) for key in test[0]}
        predictions = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits.argmax(-1)
    accuracy = (predictions == inputs["labels"]).float().mean().item()
    assert accuracy > 0.9, accuracy  # chance is 0.5


def test_trainer_gradient_accumulation_averages_like_one_batch(tmp_path):
    """Two accumulated batches of 8 take the step one batch of 16 takes (the loss is a mean: Trainer scales it)."""
    generator = torch.Generator().manual_seed(0)
    rows = [{"input_ids": torch.randint(0, PAD, (6,), generator=generator), "labels": i % 3} for i in range(16)]

    def one_step(batch_size: int, accumulation: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        model = GPT2EduForSequenceClassification(tiny_config(pad_token_id=PAD, num_labels=3, drop_rate=0.0))
        args = TrainingArguments(
            output_dir=str(tmp_path / str(accumulation)),
            max_steps=1,
            per_device_train_batch_size=batch_size,
            gradient_accumulation_steps=accumulation,
            learning_rate=1.0,
            optim="sgd",
            max_grad_norm=0.0,
            lr_scheduler_type="constant",
            report_to=[],
            use_cpu=True,
            save_strategy="no",
            disable_tqdm=True,
        )
        Trainer(model=model, args=args, train_dataset=rows).train()
        return model.state_dict()

    accumulated, whole = one_step(8, 2), one_step(16, 1)
    for name, tensor in whole.items():
        torch.testing.assert_close(accumulated[name], tensor, atol=1e-6, rtol=1e-5, msg=name)
