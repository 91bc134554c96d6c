"""What vLLM's Transformers backend reads of a gpt2edu folder, checked without vLLM.

vLLM (`LLM(model=FOLDER, model_impl="transformers", trust_remote_code=True)`) builds the body with `AutoModel`, sets
its own attention function, and makes its own `lm_head`. Three things of ours it relies on, each read here the way
vLLM 0.32 reads it (vllm/model_executor/models/transformers/base.py and fusers/attention.py): the attention call's
`scaling=` found in the forward's source and resolved on the module, the checkpoint's names mapped through
transformers' conversion mapping onto `model.*` and `lm_head.weight`, and the keyword arguments its attention
function needs reaching it. bench/check_vllm.py serves a model in vLLM itself.
"""

import ast
import inspect
import re
import textwrap

import pytest
import torch
from conftest import tiny_config
from safetensors import safe_open
from transformers import AttentionInterface, AutoModel
from transformers.conversion_mapping import (
    WeightRenaming,
    get_checkpoint_conversion_mapping,
    get_model_conversion_mapping,
)
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from modeling_gpt2edu import GPT2EduForCausalLM, MultiHeadAttention


def interface_call(forward) -> ast.Call:
    """The one call of a name assigned from `ALL_ATTENTION_FUNCTIONS` in `forward` (vLLM's `interface_call`)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(inspect.unwrap(forward))))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            func = node.value.func
            if isinstance(func, ast.Attribute) and getattr(func.value, "id", None) == "ALL_ATTENTION_FUNCTIONS":
                names.update(target.id for target in node.targets if isinstance(target, ast.Name))
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) in names]
    assert len(calls) == 1, f"vLLM needs exactly one attention-interface call, found {len(calls)}"
    return calls[0]


def test_the_attention_scale_is_an_attribute_vllm_resolves():
    (scaling,) = [
        keyword.value for keyword in interface_call(MultiHeadAttention.forward).keywords if keyword.arg == "scaling"
    ]
    # vLLM accepts a literal or `self.<attribute>` and raises "Cannot resolve attention scaling expression" otherwise.
    assert isinstance(scaling, ast.Attribute) and isinstance(scaling.value, ast.Name) and scaling.value.id == "self"
    for n_heads in (2, 4):
        module = MultiHeadAttention(tiny_config(n_heads=n_heads), layer_idx=0)
        assert getattr(module, scaling.attr) == (32 // n_heads) ** -0.5


def vllm_weight_names(folder, config) -> set[str]:
    """The checkpoint's tensor names as vLLM's backend maps them onto its modules (`_create_hf_to_vllm_mapper`)."""
    body = AutoModel.from_config(config)
    renamings = get_model_conversion_mapping(body)
    instantiated = {type(module).__name__ for module in body.modules()}
    for architecture in config.architectures or []:
        if architecture not in instantiated:
            renamings.extend(get_checkpoint_conversion_mapping(architecture) or [])
    renamings = [renaming for renaming in renamings if isinstance(renaming, WeightRenaming)]
    children = "|".join(name for name, _ in body.named_children())
    regexes = {
        re.compile(rf"^(?!model\.)(({children}).*)"): r"model.\1",  # body weights saved without the `model.` prefix
        re.compile(rf"^(model\.)((?!{children}).+)"): r"\2",  # weights under `model.` that are not the body's
        re.compile(r"^model\.(.+\.)*(lm_head.+)"): r"\2",  # an lm_head saved inside the body
    }
    with safe_open(folder / "model.safetensors", framework="pt") as weights:
        names = set(weights.keys())
    mapped = set()
    for name in names:
        for renaming in renamings:
            name, _ = renaming.rename_source_key(name)
        for pattern, replacement in regexes.items():
            name = pattern.sub(replacement, name) if pattern.search(name) else name
        mapped.add(name)
    return names, mapped, {f"model.{name}" for name in body.state_dict()}


@pytest.mark.parametrize("tie", [False, True], ids=["untied", "tied"])
@pytest.mark.parametrize("layout", ["as_saved", "lm_head_in_the_file"])
def test_the_checkpoint_maps_onto_vllms_modules(tmp_path, tie, layout):
    model = GPT2EduForCausalLM(tiny_config(tie_word_embeddings=tie))
    # save_pretrained writes the head as the seed's out_head.weight, as every gpt2edu folder before lm_head did;
    # without the conversion mapping applied backwards, the file holds the model's own name, lm_head.weight.
    model.save_pretrained(tmp_path, save_original_format=layout == "as_saved")
    names, mapped, body = vllm_weight_names(tmp_path, model.config)
    head = {"out_head.weight"} if layout == "as_saved" else {"lm_head.weight"}
    assert names == body | (set() if tie else head)
    assert mapped == body | (set() if tie else {"lm_head.weight"})  # vLLM ties its lm_head itself when tied


def test_vllms_attention_function_gets_the_scale_and_its_own_arguments():
    config = tiny_config()
    body = AutoModel.from_config(config).eval()
    seen = []

    def engine_attention(module, q, k, v, attention_mask, scaling=None, dropout=0.0, **kwargs):
        seen.append((module, scaling, kwargs))
        return sdpa_attention_forward(module, q, k, v, attention_mask, scaling=scaling, dropout=dropout)

    AttentionInterface.register("engine_recorder", engine_attention)
    input_ids = torch.randint(0, 100, (1, 9))
    with torch.no_grad():
        plain = body(input_ids).last_hidden_state
        body.config._attn_implementation = "engine_recorder"  # as vLLM sets "vllm" before building the body
        instances = {0: "layer 0's kernel", 1: "layer 1's kernel"}
        # vLLM's call: one row, positions given, no cache, a tuple back, its own keyword arguments
        hidden = body(
            input_ids=input_ids, position_ids=torch.arange(9)[None], use_cache=False, return_dict=False,
            attention_instances=instances,
        )[0]  # fmt: skip
    torch.testing.assert_close(hidden, plain)
    assert [module.layer_idx for module, _, _ in seen] == [0, 1]  # vLLM finds each layer's kernel by layer_idx
    for module, scaling, kwargs in seen:
        assert scaling == module.scaling  # what vLLM read statically is what the model passes
        assert kwargs["attention_instances"] is instances and "position_ids" in kwargs
