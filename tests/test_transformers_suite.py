"""transformers' own model test suite (ModelTesterMixin, ConfigTester) run on gpt2edu.

These are the generic tests transformers' maintainers hold every model to, from the installed version's source
distribution (see transformers_sources.py). A test that does not apply to a custom-code model is skipped with its
reason next to it; none is skipped because it fails.
"""

import sys
import unittest
from unittest.mock import patch

import pytest
import transformers_sources
from conftest import tiny_config
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_MAPPING_NAMES

from configuration_gpt2edu import GPT2EduConfig
from modeling_gpt2edu import GPT2EduForCausalLM, GPT2EduModel

try:
    sys.path.insert(0, str(transformers_sources.fetch()))
except RuntimeError as error:  # no package registry reachable: nothing to run these tests with
    pytest.skip(str(error), allow_module_level=True)

from transformers_tests.test_configuration_common import ConfigTester  # noqa: E402
from transformers_tests.test_modeling_common import ModelTesterMixin, ids_tensor, random_attention_mask  # noqa: E402


class GPT2EduModelTester:
    """Builds the tiny configs and inputs the mixin's tests run on."""

    def __init__(self, parent, batch_size=13, seq_length=7, vocab_size=99, is_training=True):
        self.parent = parent
        self.batch_size = batch_size
        self.seq_length = seq_length
        self.vocab_size = vocab_size
        self.is_training = is_training
        # Names the mixin reads off the tester.
        self.hidden_size = 32
        self.num_hidden_layers = 2
        self.num_attention_heads = 4

    def get_config(self) -> GPT2EduConfig:
        return tiny_config(
            vocab_size=self.vocab_size,
            emb_dim=self.hidden_size,
            n_layers=self.num_hidden_layers,
            n_heads=self.num_attention_heads,
            context_length=64,
            bos_token_id=self.vocab_size - 1,
            eos_token_id=self.vocab_size - 1,
            pad_token_id=self.vocab_size - 1,
        )

    def prepare_config_and_inputs_for_common(self):
        input_ids = ids_tensor([self.batch_size, self.seq_length], self.vocab_size - 1)
        attention_mask = random_attention_mask([self.batch_size, self.seq_length])
        return self.get_config(), {"input_ids": input_ids, "attention_mask": attention_mask}


class GPT2EduModelTest(ModelTesterMixin, unittest.TestCase):
    all_model_classes = (GPT2EduModel, GPT2EduForCausalLM)
    # The mixin runs test_can_init_all_missing_weights only for models whose files carry a copyright year >= 2023, or
    # with this flag; ours carry none, and GPT-2's initialisation must cover every weight, so run it.
    test_can_init_all_missing_weights_before_2023 = True

    def setUp(self):
        self.model_tester = GPT2EduModelTester(self)
        self.config_tester = ConfigTester(self, config_class=GPT2EduConfig, emb_dim=37, n_heads=1)
        # The mixin tells a class's task (a base model trains nothing; a causal LM gets labels) from transformers'
        # static tables of built-in class names. `AutoModel.register` fills the Auto classes' lazy mappings, not those
        # tables, so list our two classes there as a built-in model would be, for the duration of each test.
        for table, name in (
            (MODEL_MAPPING_NAMES, "GPT2EduModel"),
            (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, "GPT2EduForCausalLM"),
        ):
            patcher = patch.dict(table, {"gpt2edu": name})
            patcher.start()
            self.addCleanup(patcher.stop)

    def test_config(self):
        self.config_tester.run_common_tests()

    @unittest.skip(
        "Needs GenerationTesterMixin from tests/generation/test_utils.py, which the sdist does not ship; "
        "generate() is tested against the seed's greedy loop in test_model.py and test_model_contract.py."
    )
    def test_generation_tester_mixin_inheritance(self):
        pass


def test_the_suite_is_transformers_own():
    """The mixin comes from transformers' sdist of the installed version, not from a copy in this repository."""
    import transformers
    import transformers_tests.test_modeling_common as common

    assert f"transformers-{transformers.__version__}" in common.__file__
    assert len([name for name in dir(ModelTesterMixin) if name.startswith("test_")]) > 100
