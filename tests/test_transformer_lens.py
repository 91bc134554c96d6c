"""TransformerLens on a gpt2edu folder (gpt2edu/transformer_lens_adapter.py), against the model itself, against what
inspect_model.py reports, and against TransformerLens' own GPT-2 adapter on the same weights (the --to gpt2 folder)."""

import importlib.metadata
import importlib.util
import logging
import warnings

import pytest
import torch
from conftest import tiny_config

from convert_checkpoint import build_model, read_source
from inspect_model import load_for_inspection, look_inside
from modeling_gpt2edu import GPT2EduForCausalLM

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("transformer_lens") is None,
    reason="transformer-lens is not installed (it is in the dev extras: pip install -e '.[dev]')",
)

PROMPT = "Every effort moves you toward the goal, and then"
N_LAYERS = 2


@pytest.fixture(scope="module")
def bridge_class():
    """TransformerBridge, with gpt2edu's adapter registered.

    Importing TransformerLens sets transformers' logger to ERROR for the whole process; the level and the warning
    filters are put back, so that the tests after these still see the warnings they check.
    """
    level = logging.getLogger("transformers").level
    with warnings.catch_warnings():
        from transformer_lens.model_bridge import TransformerBridge

        import gpt2edu.transformer_lens_adapter  # noqa: F401
    logging.getLogger("transformers").setLevel(level)
    return TransformerBridge


@pytest.fixture(scope="module")
def folders(tokenizer, tmp_path_factory) -> dict:
    """A tiny gpt2edu folder (biases on query, key and value; random LayerNorm scales and shifts, which a bridge
    that skipped them or folded them wrongly would not survive), and the --to gpt2 folder of the same weights."""
    torch.manual_seed(2)
    model = GPT2EduForCausalLM(
        tiny_config(vocab_size=50257, bos_token_id=50256, eos_token_id=50256, n_layers=N_LAYERS, qkv_bias=True)
    ).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith(".scale"):
                parameter.uniform_(0.5, 2.0)
            elif name.endswith((".shift", ".bias")):
                parameter.normal_(0.0, 0.5)
    folders = {"gpt2edu": tmp_path_factory.mktemp("gpt2edu"), "gpt2": tmp_path_factory.mktemp("gpt2")}
    model.save_pretrained(folders["gpt2edu"])
    build_model(read_source(folders["gpt2edu"]), "gpt2").save_pretrained(folders["gpt2"])
    for folder in folders.values():
        tokenizer.save_pretrained(folder)
    return folders


@pytest.fixture(scope="module")
def ours(folders):
    """The gpt2edu folder loaded as inspect_model.py loads it (eager attention, float32, eval)."""
    model, _ = load_for_inspection(str(folders["gpt2edu"]))
    return model


@pytest.fixture(scope="module")
def input_ids(tokenizer) -> torch.Tensor:
    return torch.tensor([tokenizer(PROMPT).input_ids])


@pytest.fixture(scope="module")
def run(bridge_class, folders, input_ids) -> dict:
    """Both folders in TransformerBridge, as boot_transformers opens them, and their logits and activations."""
    result = {}
    for kind, folder in folders.items():
        bridge = bridge_class.boot_transformers(str(folder), device="cpu")
        with torch.no_grad():
            logits, cache = bridge.run_with_cache(input_ids)
        result[kind] = {"bridge": bridge, "logits": logits, "cache": cache}
    return result


def test_adapter_is_gpt2edus_with_the_usual_hook_names(run):
    from gpt2edu.transformer_lens_adapter import GPT2EduArchitectureAdapter

    assert type(run["gpt2edu"]["bridge"].adapter) is GPT2EduArchitectureAdapter
    names = set(run["gpt2edu"]["cache"].keys())
    assert {"hook_embed", "hook_pos_embed", "ln_final.hook_normalized"} <= names
    for layer in range(N_LAYERS):
        for hook in ("hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_attn_out", "hook_mlp_out"):
            assert f"blocks.{layer}.{hook}" in names
        for hook in ("hook_q", "hook_k", "hook_v", "hook_attn_scores", "hook_pattern", "hook_z"):
            assert f"blocks.{layer}.attn.{hook}" in names
    assert names == set(run["gpt2"]["cache"].keys())  # every activation TransformerLens' GPT-2 adapter offers


def test_logits_pattern_and_stream_are_the_models_own(run, ours, input_ids):
    with torch.no_grad():
        output = ours(input_ids, output_attentions=True, output_hidden_states=True)
    cache = run["gpt2edu"]["cache"]
    torch.testing.assert_close(run["gpt2edu"]["logits"], output.logits)
    for layer in range(N_LAYERS):
        torch.testing.assert_close(cache[f"blocks.{layer}.attn.hook_pattern"], output.attentions[layer])
        torch.testing.assert_close(cache[f"blocks.{layer}.hook_resid_pre"], output.hidden_states[layer])
    # the model's last hidden state has been through the final LayerNorm already
    torch.testing.assert_close(cache["ln_final.hook_out"], output.hidden_states[N_LAYERS])


def test_pattern_lens_and_residual_stream_equal_inspect_models(run, ours, input_ids):
    bridge, cache = run["gpt2edu"]["bridge"], run["gpt2edu"]["cache"]
    inside = look_inside(ours, input_ids)
    pattern = torch.stack([cache[f"blocks.{layer}.attn.hook_pattern"][0] for layer in range(N_LAYERS)])
    torch.testing.assert_close(pattern, inside["attentions"])
    # the stream entering the first block, then leaving each block
    stream = [cache["blocks.0.hook_resid_pre"]] + [cache[f"blocks.{i}.hook_resid_post"] for i in range(N_LAYERS)]
    with torch.no_grad():
        lens_probs, lens_ids = torch.stack([bridge.unembed(bridge.ln_final(s))[0] for s in stream]).softmax(-1).max(-1)
    assert torch.equal(lens_ids, inside["lens_ids"])
    torch.testing.assert_close(lens_probs, inside["lens_probs"])
    torch.testing.assert_close(torch.stack(stream)[:, 0].norm(dim=-1), inside["stream_norms"])
    for hook, key in (("hook_attn_out", "attention_norms"), ("hook_mlp_out", "mlp_norms")):
        added = torch.stack([cache[f"blocks.{layer}.{hook}"][0] for layer in range(N_LAYERS)])
        torch.testing.assert_close(added.norm(dim=-1), inside[key])


def test_activations_equal_transformer_lens_gpt2_adapters(run, bridge_class, folders, input_ids):
    torch.testing.assert_close(run["gpt2edu"]["logits"], run["gpt2"]["logits"])
    for name, activation in run["gpt2"]["cache"].items():
        torch.testing.assert_close(
            run["gpt2edu"]["cache"][name], activation, msg=lambda message, name=name: f"{name}: {message}"
        )
    # compatibility mode: HookedTransformer's numbers (LayerNorms folded into the next weights, weights centred)
    compatible = {}
    for kind, folder in folders.items():
        bridge = bridge_class.boot_transformers(str(folder), device="cpu")
        bridge.enable_compatibility_mode(disable_warnings=True)
        with torch.no_grad():
            compatible[kind] = bridge.run_with_cache(input_ids)
    torch.testing.assert_close(compatible["gpt2edu"][0], compatible["gpt2"][0])
    assert not torch.allclose(compatible["gpt2edu"][0], run["gpt2edu"]["logits"])  # the weights were processed
    for name, activation in compatible["gpt2"][1].items():
        torch.testing.assert_close(
            compatible["gpt2edu"][1][name], activation, msg=lambda message, name=name: f"{name}: {message}"
        )


def test_ablating_a_head_and_generating(run, ours, input_ids):
    bridge, layer, head = run["gpt2edu"]["bridge"], 1, 2
    head_dim = ours.config.emb_dim // ours.config.n_heads

    def without_head(module, args):  # out_proj's input is the heads' outputs side by side, (batch, seq, emb_dim)
        context = args[0].clone()
        context[..., head * head_dim : (head + 1) * head_dim] = 0
        return (context,)

    handle = ours.model.trf_blocks[layer].att.out_proj.register_forward_pre_hook(without_head)
    try:
        with torch.no_grad():
            expected = ours(input_ids).logits
    finally:
        handle.remove()

    def zero_z(z, hook):  # (batch, seq, n_heads, head_dim)
        z[:, :, head] = 0
        return z

    def zero_pattern(pattern, hook):  # (batch, n_heads, query, key)
        pattern[:, head] = 0
        return pattern

    with torch.no_grad():
        for hook, edit in (("hook_z", zero_z), ("hook_pattern", zero_pattern)):
            ablated = bridge.run_with_hooks(input_ids, fwd_hooks=[(f"blocks.{layer}.attn.{hook}", edit)])
            torch.testing.assert_close(ablated, expected, msg=lambda message, hook=hook: f"{hook}: {message}")
        greedy = ours.generate(input_ids, max_new_tokens=6, do_sample=False)
        # the bridge's generate() runs the model with its KV cache, through the adapter's attention
        assert torch.equal(bridge.generate(input_ids, max_new_tokens=6, do_sample=False, verbose=False), greedy)


def test_the_entry_point_names_the_adapter_for_transformer_lens(bridge_class):
    from transformer_lens.factories.architecture_adapter_factory import ArchitectureAdapterFactory

    from gpt2edu.transformer_lens_adapter import GPT2EduArchitectureAdapter

    names = [
        entry_point.name for entry_point in importlib.metadata.entry_points(group="transformer_lens.architectures")
    ]
    if "GPT2EduForCausalLM" not in names:
        pytest.skip("gpt2edu is not installed, so neither are its entry points (pip install -e .)")
    # TransformerLens' own discovery, run afresh on a registry of its own (the process' registry is left as it is)
    factory = type("Factory", (ArchitectureAdapterFactory,), {"_adapters": {}, "_entry_points_discovered": False})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nor does it warn of an adapter registered twice
        factory.discover_entry_points()
    assert factory._adapters["GPT2EduForCausalLM"] is GPT2EduArchitectureAdapter
