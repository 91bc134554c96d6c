"""The forward arguments every transformers causal LM honours, checked against transformers' own GPT-2.

past_key_values (the older name of the cache), output_attentions, output_hidden_states, return_dict, the attention
implementation switch, torch.export, and the generation paths that consume them.
"""

import warnings

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_config
from transformers import AutoModelForCausalLM, DynamicCache, GPT2Config, GPT2LMHeadModel

from convert_checkpoint import gpt2_config_to_gpt2edu, gpt2_to_gpt2edu_state_dict
from modeling_gpt2edu import GPT2EduForCausalLM, GPT2EduModel


def make_model(seed: int = 0, attn_implementation: str = "sdpa", **overrides) -> GPT2EduForCausalLM:
    torch.manual_seed(seed)
    model = GPT2EduForCausalLM._from_config(tiny_config(**overrides), attn_implementation=attn_implementation).eval()
    model.generation_config.eos_token_id = None  # let every run generate exactly max_new_tokens
    return model


def model_pair(attn_implementation: str = "sdpa"):
    """GPT2LMHeadModel (eager) and gpt2edu with the same weights."""
    torch.manual_seed(0)
    reference = GPT2LMHeadModel._from_config(
        GPT2Config(vocab_size=101, n_positions=64, n_embd=48, n_head=4, n_layer=3, bos_token_id=0, eos_token_id=0),
        attn_implementation="eager",
    ).eval()
    config = gpt2_config_to_gpt2edu(reference.config)
    model = GPT2EduForCausalLM._from_config(config, attn_implementation=attn_implementation).eval()
    model.load_state_dict(gpt2_to_gpt2edu_state_dict(reference.state_dict(), config.n_layers), strict=True)
    return reference, model


def left_padded_batch():
    input_ids = torch.randint(1, 101, (3, 10))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, :4] = 0
    attention_mask[2, :1] = 0
    return input_ids, attention_mask


# --- past_key_values: transformers 4's name for the cache --------------------------------------------------------


@pytest.mark.parametrize("model_class", [GPT2EduForCausalLM, GPT2EduModel])
def test_past_key_values_is_the_cache_with_a_deprecation_warning(model_class):
    torch.manual_seed(0)
    model = model_class(tiny_config()).eval()
    input_ids = torch.randint(0, 100, (2, 9))
    first_part = lambda out: out.logits if hasattr(out, "logits") else out.last_hidden_state  # noqa: E731
    with torch.no_grad():
        full = first_part(model(input_ids))
        prefix = model(input_ids[:, :5], use_cache=True)
        with pytest.warns(FutureWarning, match="past_key_values"):
            rest = model(input_ids[:, 5:], past_key_values=prefix.cache)
    assert rest.cache is prefix.cache and prefix.cache.get_seq_length() == 9
    torch.testing.assert_close(first_part(rest), full[:, 5:])


@pytest.mark.parametrize("model_class", [GPT2EduForCausalLM, GPT2EduModel])
def test_an_unknown_argument_is_refused_not_swallowed(model_class):
    model = model_class(tiny_config()).eval()
    input_ids = torch.randint(0, 100, (1, 4))
    cache = model(input_ids, use_cache=True).cache
    with pytest.raises(TypeError, match="past_key_value"):
        model(input_ids, past_key_value=cache)  # a misspelt cache would otherwise be dropped without a word


def test_a_legacy_tuple_cache_is_refused():
    model = make_model()
    with pytest.raises(TypeError, match="Cache"):
        model(torch.zeros(1, 2, dtype=torch.long), cache=((torch.zeros(1), torch.zeros(1)),))


# --- attention weights and hidden states -------------------------------------------------------------------------


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_attentions_and_hidden_states_equal_gpt2s(attn_implementation):
    reference, model = model_pair(attn_implementation)
    input_ids, attention_mask = left_padded_batch()
    real = attention_mask.bool()
    # Left padding: positions count from each row's first real token (gpt2edu infers this; GPT-2 must be told).
    inputs = dict(
        attention_mask=attention_mask,
        position_ids=(attention_mask.cumsum(-1) - 1).clamp(min=0),
        output_attentions=True,
        output_hidden_states=True,
    )
    with torch.no_grad():
        expected = reference(input_ids, **inputs)
        actual = model(input_ids, **inputs)
    assert len(actual.attentions) == 3 and len(actual.hidden_states) == 4  # one per block; embeddings + one per block
    for ours, theirs in zip(actual.attentions, expected.attentions, strict=True):
        assert ours.shape == (3, 4, 10, 10)
        torch.testing.assert_close(ours.transpose(1, 2)[real], theirs.transpose(1, 2)[real])  # real queries only
    for ours, theirs in zip(actual.hidden_states, expected.hidden_states, strict=True):
        torch.testing.assert_close(ours[real], theirs[real])
    inputs.update(output_attentions=False, output_hidden_states=False)
    torch.testing.assert_close(
        actual.hidden_states[-1][real], model.model(input_ids, **inputs).last_hidden_state[real]
    )


def test_attentions_are_the_softmax_written_out():
    """Layer 0's weights, computed by hand from its input: softmax(q k^T / sqrt(d)) over the causal triangle."""
    model = make_model()
    input_ids = torch.randint(0, 100, (2, 7))
    with torch.no_grad():
        out = model(input_ids, output_attentions=True, output_hidden_states=True)
        att = model.model.trf_blocks[0].att
        x = model.model.trf_blocks[0].norm1(out.hidden_states[0])
        q = att.W_query(x).view(2, 7, 4, 8).transpose(1, 2)
        k = att.W_key(x).view(2, 7, 4, 8).transpose(1, 2)
        scores = (q @ k.transpose(-2, -1)) / 8**0.5
        future = torch.ones(7, 7, dtype=torch.bool).triu(1)
        expected = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)
    torch.testing.assert_close(out.attentions[0], expected)
    assert torch.all(out.attentions[1].sum(-1).sub(1).abs() < 1e-5)


def test_attentions_against_a_cache_cover_every_key():
    model = make_model()
    input_ids = torch.randint(0, 100, (1, 8))
    with torch.no_grad():
        full = model(input_ids, output_attentions=True).attentions
        prefix = model(input_ids[:, :5], use_cache=True)
        step = model(input_ids[:, 5:], cache=prefix.cache, output_attentions=True).attentions
    for whole, last in zip(full, step, strict=True):
        assert last.shape == (1, 4, 3, 8)
        torch.testing.assert_close(last, whole[:, :, 5:])


def test_config_flags_are_honoured():
    model = make_model(attn_implementation="eager")  # transformers' config refuses output_attentions with sdpa
    model.config.output_attentions = model.config.output_hidden_states = True
    out = model(torch.randint(0, 100, (1, 4)))
    assert len(out.attentions) == 2 and len(out.hidden_states) == 3
    with pytest.raises(ValueError, match="output_hidden_states"):
        model(torch.randint(0, 100, (1, 4)), output_hidden_states=[0, -1])


def test_no_outputs_unless_asked():
    out = make_model()(torch.randint(0, 100, (1, 4)))
    assert out.attentions is None and out.hidden_states is None


# --- return_dict -------------------------------------------------------------------------------------------------


def test_return_dict_false_gives_transformers_tuple_order():
    model = make_model()
    input_ids = torch.randint(0, 100, (2, 6))
    with torch.no_grad():
        as_dict = model(input_ids, labels=input_ids, output_attentions=True, output_hidden_states=True)
        loss, logits, cache, hidden_states, attentions = model(
            input_ids, labels=input_ids, output_attentions=True, output_hidden_states=True, return_dict=False
        )
        logits_only, cache_only = model(input_ids, return_dict=False)
    assert isinstance(cache, DynamicCache) and isinstance(cache_only, DynamicCache)
    torch.testing.assert_close(loss, as_dict.loss)
    torch.testing.assert_close(logits, as_dict.logits)
    torch.testing.assert_close(logits_only, as_dict.logits)
    assert len(hidden_states) == 3 and len(attentions) == 2

    model.config.return_dict = False
    body_output = model.model(input_ids, use_cache=False)
    assert isinstance(body_output, tuple) and len(body_output) == 1
    torch.testing.assert_close(model(input_ids, use_cache=False)[0], as_dict.logits)


# --- the attention implementation switch -------------------------------------------------------------------------


def record_sdpa_masks(monkeypatch) -> list:
    """Spy on PyTorch's fused attention: the list gets the attn_mask of each call, which still runs as before."""
    masks, original = [], F.scaled_dot_product_attention
    monkeypatch.setattr(
        F, "scaled_dot_product_attention", lambda *a, **k: masks.append(k.get("attn_mask")) or original(*a, **k)
    )
    return masks


def test_set_attn_implementation_and_from_pretrained_switch_the_kernel(tmp_path, monkeypatch):
    model = make_model()
    input_ids, attention_mask = left_padded_batch()
    with torch.no_grad():
        sdpa_logits = model(input_ids, attention_mask=attention_mask).logits
    model.set_attn_implementation("eager")
    assert model.config._attn_implementation == "eager"
    assert all(block.att.config._attn_implementation == "eager" for block in model.model.trf_blocks)
    calls = record_sdpa_masks(monkeypatch)
    with torch.no_grad():
        eager_logits = model(input_ids, attention_mask=attention_mask).logits
    assert calls == []  # eager never calls the fused kernel
    model.set_attn_implementation("sdpa")
    with torch.no_grad():
        model(input_ids, attention_mask=attention_mask)
    assert len(calls) == 2  # one per block
    real = attention_mask.bool()
    torch.testing.assert_close(eager_logits[real], sdpa_logits[real])

    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager")
    assert loaded.config._attn_implementation == "eager"


def test_output_attentions_refuses_a_kernel_that_cannot_return_them():
    model = make_model()
    model.config._attn_implementation = "flex_attention"
    with pytest.raises(ValueError, match="set_attn_implementation"):
        model(torch.randint(0, 100, (1, 4)), output_attentions=True)


# --- torch.export ------------------------------------------------------------------------------------------------


class LogitsOnly(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask=None):
        return self.model(input_ids, attention_mask=attention_mask, use_cache=False).logits


def test_torch_export_with_and_without_an_attention_mask():
    model = make_model()
    input_ids, attention_mask = left_padded_batch()
    wrapper = LogitsOnly(model)
    with torch.no_grad():
        exported = torch.export.export(wrapper, (input_ids, torch.ones_like(attention_mask))).module()
        # Traced with no padding, run with padding: the mask is data in the graph, not a branch taken at export.
        torch.testing.assert_close(exported(input_ids, attention_mask), wrapper(input_ids, attention_mask))
        torch.testing.assert_close(exported(input_ids, torch.ones_like(attention_mask)), wrapper(input_ids))
        no_mask = torch.export.export(wrapper, (input_ids,)).module()
        torch.testing.assert_close(no_mask(input_ids), wrapper(input_ids))


def test_transformers_executorch_exporter_with_a_static_cache():
    from transformers.integrations.executorch import TorchExportableModuleForDecoderOnlyLM

    model = make_model()
    model.generation_config.cache_implementation = "static"
    prompt = torch.randint(0, 100, (1, 4))
    exportable = TorchExportableModuleForDecoderOnlyLM(model, batch_size=1, max_cache_len=32)
    program = exportable.export(input_ids=prompt[:, :1], cache_position=torch.tensor([0])).module()
    expected = model.generate(prompt, max_new_tokens=6, do_sample=False)
    tokens = prompt
    with torch.no_grad():
        for position in range(expected.shape[1] - 1):  # one token at a time, as ExecuTorch's runner feeds it
            logits = program(input_ids=tokens[:, position : position + 1], cache_position=torch.tensor([position]))
            torch.testing.assert_close(logits[0, -1], model(tokens[:, : position + 1]).logits[0, -1])
            if position + 1 >= tokens.shape[1]:
                tokens = torch.cat([tokens, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(tokens, expected)


# --- generation with the output flags ----------------------------------------------------------------------------


def test_generate_returns_attentions_and_hidden_states_per_step():
    model = make_model()
    prompt = torch.randint(0, 100, (2, 5))
    out = model.generate(
        prompt,
        max_new_tokens=4,
        do_sample=False,
        return_dict_in_generate=True,
        output_attentions=True,
        output_hidden_states=True,
    )
    assert len(out.attentions) == len(out.hidden_states) == 4
    assert out.attentions[0][0].shape == (2, 4, 5, 5)  # the prompt
    assert out.attentions[3][1].shape == (2, 4, 1, 8)  # the fourth new token against the cache
    assert out.hidden_states[2][0].shape == (2, 1, 32)
    with torch.no_grad():
        full = model(out.sequences[:, :-1], output_attentions=True)
    torch.testing.assert_close(out.attentions[3][1][:, :, 0], full.attentions[1][:, :, -1])


@pytest.mark.parametrize("mode", ["prompt_lookup", "assistant_model"])
def test_assisted_decoding_with_output_flags_equals_greedy(mode):
    model = make_model().double()
    prompt = torch.tensor([[5, 6, 7, 8, 5, 6, 7, 8, 5, 6]])  # repeats, so prompt lookup has candidates to propose
    greedy = model.generate(prompt, max_new_tokens=8, do_sample=False)
    extra = {"prompt_lookup_num_tokens": 3} if mode == "prompt_lookup" else {"assistant_model": make_model(1).double()}
    out = model.generate(
        prompt,
        max_new_tokens=8,
        do_sample=False,
        return_dict_in_generate=True,
        output_attentions=True,
        output_hidden_states=True,
        **extra,
    )
    assert torch.equal(out.sequences, greedy)
    assert all(layer is not None for step in out.attentions for layer in step)
    assert len(out.attentions) == 8


def test_padding_queries_stay_finite_in_both_kernels():
    for attn_implementation in ("sdpa", "eager"):
        model = make_model(attn_implementation=attn_implementation)
        input_ids, attention_mask = left_padded_batch()
        input_ids = input_ids.clamp(max=100)
        out = model(input_ids, attention_mask=attention_mask, output_attentions=True)
        assert torch.isfinite(out.logits).all()
        assert all(torch.isfinite(a).all() for a in out.attentions)
        # A real query gives no weight to a padding key.
        assert torch.all(out.attentions[0][1, :, 4:, :4] == 0)


def test_no_mask_cost_without_padding(monkeypatch):
    """Without padding, the default sdpa path hands the fused kernel no mask (its own causal mode is exact)."""
    model = make_model()
    seen = record_sdpa_masks(monkeypatch)
    with torch.no_grad():
        model(torch.randint(0, 100, (2, 6)), attention_mask=torch.ones(2, 6, dtype=torch.long))
    assert seen == [None, None]


def test_no_future_leak_in_outputs():
    """Changing a later token changes no earlier position's hidden states or attentions."""
    model = make_model()
    a = torch.randint(0, 100, (1, 8))
    b = a.clone()
    b[0, 6] = (a[0, 6] + 1) % 100
    with torch.no_grad():
        out_a = model(a, output_attentions=True, output_hidden_states=True)
        out_b = model(b, output_attentions=True, output_hidden_states=True)
    for x, y in zip(out_a.hidden_states, out_b.hidden_states, strict=True):
        torch.testing.assert_close(x[:, :6], y[:, :6])
    assert not torch.allclose(out_a.hidden_states[-1][:, 6:], out_b.hidden_states[-1][:, 6:])


def test_warning_free_forward_by_default():
    model = make_model()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model(torch.randint(0, 100, (1, 4)), cache=DynamicCache(config=model.config))
