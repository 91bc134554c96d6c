"""The book's chapter-6 classifier through the converter: its logits with both poolings, labels, the way back.

The reference is the book's own model (tests/seed_reference.py's GPTModel with `out_head` replaced by
`Linear(emb_dim, 2)`, as chapter 6 replaces it) and its last-position pooling, `model(input_batch)[:, -1, :]`.
"""

import json
import shutil
from pathlib import Path

import pytest
import torch
from seed_reference import seed_model
from test_book_checkpoints import SEED_SIZES, assert_one_line_error, run_program

import run_inference
from convert_checkpoint import main as convert

# --- the book's chapter-6 classifier ------------------------------------------------------------------------------

TEXTS = ["You won a free prize, call now", "See you at lunch", "Urgent: your account needs a reply today, click"]


@pytest.fixture(scope="module")
def review_classifier(tmp_path_factory):
    """The book's chapter-6 model: its GPTModel with `out_head` replaced by `Linear(emb_dim, 2)` (a bias included),
    saved as the book saves it, `torch.save(model.state_dict(), "review_classifier.pth")`."""
    model = seed_model(seed=11, **SEED_SIZES)
    torch.manual_seed(12)
    model.out_head = torch.nn.Linear(SEED_SIZES["emb_dim"], 2)
    with torch.no_grad():
        model.out_head.bias.normal_(0.0, 0.5)
    model.eval()
    path = tmp_path_factory.mktemp("ch06") / "review_classifier.pth"
    torch.save(model.state_dict(), path)
    return model, path


@pytest.fixture(scope="module")
def classifier_folders(review_classifier, tmp_path_factory) -> dict:
    """The checkpoint converted with the book's pooling (the default) and with GPT-2's."""
    _, path = review_classifier
    folders = {}
    for pooling in ("last_position", "last_non_padding"):
        folders[pooling] = tmp_path_factory.mktemp("converted") / pooling
        flags = ["--labels", "ham,spam"] + (["--pooling", pooling] if pooling == "last_non_padding" else [])
        assert convert([str(path), str(folders[pooling]), "--n-heads", "4", *flags]) == 0
    return folders


def book_batch(tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """The texts padded on the right with <|endoftext|> (50256) to one length, as the book's dataset pads them; and
    each row's last real position."""
    ids = [tokenizer(text).input_ids for text in TEXTS]
    length = max(len(row) for row in ids)
    padded = torch.tensor([row + [50256] * (length - len(row)) for row in ids])
    return padded, torch.tensor([len(row) - 1 for row in ids])


def load_classifier(folder: Path):
    from transformers import AutoModelForSequenceClassification

    import modeling_gpt2edu  # noqa: F401  (registers gpt2edu with the Auto classes)

    return AutoModelForSequenceClassification.from_pretrained(folder).eval()


def test_the_books_pooling_gives_the_books_logits(review_classifier, classifier_folders, tokenizer):
    """The book classifies by `model(input_batch)[:, -1, :]`: the last position, padding or not."""
    book, _ = review_classifier
    padded, _ = book_batch(tokenizer)
    classifier = load_classifier(classifier_folders["last_position"])
    assert classifier.config.classifier_pooling == "last_position" and classifier.config.classifier_bias
    assert classifier.config.id2label == {0: "ham", 1: "spam"} and classifier.config.pad_token_id == 50256
    with torch.no_grad():
        torch.testing.assert_close(classifier(input_ids=padded).logits, book(padded)[:, -1, :])


def test_gpt2s_pooling_reads_each_texts_last_real_token(review_classifier, classifier_folders, tokenizer):
    """GPT-2's pooling: the logits at each row's last token that is not padding, the book's model on the text alone."""
    book, _ = review_classifier
    padded, last = book_batch(tokenizer)
    classifier = load_classifier(classifier_folders["last_non_padding"])
    with torch.no_grad():
        alone = torch.stack([book(torch.tensor([tokenizer(text).input_ids]))[0, -1] for text in TEXTS])
        torch.testing.assert_close(classifier(input_ids=padded, attention_mask=padded != 50256).logits, alone)
        torch.testing.assert_close(alone, book(padded)[torch.arange(len(TEXTS)), last])  # causal: padding unseen


def test_the_classifier_folder_runs_in_a_pipeline_with_the_labels_given(review_classifier, classifier_folders):
    from transformers import pipeline

    book, _ = review_classifier
    classify = pipeline("text-classification", model=str(classifier_folders["last_non_padding"]), batch_size=3)
    results = classify(TEXTS)
    tokenizer = classify.tokenizer
    with torch.no_grad():
        probs = torch.stack([book(torch.tensor([tokenizer(text).input_ids]))[0, -1] for text in TEXTS]).softmax(-1)
    assert [result["label"] for result in results] == [["ham", "spam"][i] for i in probs.argmax(-1).tolist()]
    torch.testing.assert_close(torch.tensor([result["score"] for result in results]), probs.max(-1).values)


def test_to_seed_gives_back_the_books_state_dict(review_classifier, classifier_folders, tmp_path):
    book, _ = review_classifier
    assert convert([str(classifier_folders["last_position"]), str(tmp_path / "back.pth")]) == 0
    back, original = torch.load(tmp_path / "back.pth", weights_only=True), book.state_dict()
    assert set(back) == set(original)  # the same keys, att.mask buffers included
    for name, tensor in original.items():
        assert torch.equal(back[name], tensor), name
    again = seed_model(seed=0, **SEED_SIZES)
    again.out_head = torch.nn.Linear(SEED_SIZES["emb_dim"], 2)
    again.load_state_dict(back, strict=True)  # the book's own loading line
    ids = torch.randint(0, 50257, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(ids), book(ids))


def test_without_labels_the_default_names_are_said(review_classifier, tmp_path, capfd):
    _, path = review_classifier
    assert convert([str(path), str(tmp_path / "out"), "--n-heads", "4"]) == 0
    out = capfd.readouterr().out
    assert "labels LABEL_0, LABEL_1" in out and "--labels" in out
    assert load_classifier(tmp_path / "out").config.id2label == {0: "LABEL_0", 1: "LABEL_1"}


CLASSIFIER_BAD_INPUT = [
    (["--labels", "ham,spam,eggs"], "--labels names 3 label(s) (ham,spam,eggs), but the classifier's head has 2"),
    (["--labels", "ham,ham"], "give 2 different names"),
    (["--to", "gpt2"], "sequence classifier"),
    (["--to", "gguf"], "sequence classifier"),
    (["--labels", "ham,spam", "--to", "seed"], "a seed checkpoint has no place for them"),
]
BAD_INPUT_IDS = ["3_labels", "same_label", "to_gpt2", "to_gguf", "labels_to_seed"]


@pytest.mark.parametrize("extra, message", CLASSIFIER_BAD_INPUT, ids=BAD_INPUT_IDS)
def test_classifier_conversion_bad_input_is_one_line_and_writes_nothing(
    review_classifier, tmp_path, capfd, extra, message
):
    _, path = review_classifier
    out = tmp_path / ("out" + {"gguf": ".gguf", "seed": ".pth"}.get(extra[-1], ""))
    code = convert([str(path), str(out), "--n-heads", "4", *extra])
    assert_one_line_error(code, capfd.readouterr().err, "convert_checkpoint.py", message)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_labels_for_a_language_model_are_refused(tmp_path, capfd):
    torch.save(seed_model(**SEED_SIZES).state_dict(), tmp_path / "gpt2_model.pth")
    code = convert([str(tmp_path / "gpt2_model.pth"), str(tmp_path / "out"), "--n-heads", "4", "--labels", "a,b"])
    assert_one_line_error(code, capfd.readouterr().err, "convert_checkpoint.py", "this is a language model")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("what", ["folder", "pth"])
def test_run_inference_refuses_a_classifier(review_classifier, classifier_folders, tmp_path, capfd, what):
    model = classifier_folders["last_position"]
    if what == "pth":  # with its config beside it: this 32-wide model's head count is no guess of head size 64
        model = tmp_path / "review_classifier.pth"
        shutil.copyfile(review_classifier[1], model)
        fields = dict(SEED_SIZES, drop_rate=0.0, qkv_bias=False)
        (tmp_path / "review_classifier.config.json").write_text(json.dumps(fields))
    code, out, err = run_program(run_inference.main, ["--model", str(model)], capfd)
    assert_one_line_error(code, err, "run_inference.py", "GPT2EduForSequenceClassification")
    assert "not a language model" in err and out == ""
