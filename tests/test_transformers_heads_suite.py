"""transformers' own generic model tests (ModelTesterMixin) run on gpt2edu's task heads.

transformers checks a decoder's heads with the sequence- and token-classification tests of its causal-LM tester
(`tests/causal_lm_tester.py`); that file is not in the source distribution on the package registry (setuptools puts
only `tests/test*.py` there), so it cannot be fetched as `ModelTesterMixin` is. Its head tests check the logits'
shapes for the three problem types; test_heads.py checks the logits' values against transformers' GPT-2 heads. What
runs here is `ModelTesterMixin` itself with the three heads as its model classes: its head checks (the three problem
types with a backward pass, labels for each task in the training tests, loading with a different number of labels,
the re-initialised head's weights) and every generic test, with the same tester and skips as
test_transformers_suite.py.
"""

import sys
import unittest
from unittest.mock import patch

import pytest
import transformers_sources
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES,
    MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
    MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES,
    MODEL_MAPPING_NAMES,
)

from modeling_gpt2edu import (
    GPT2EduForQuestionAnswering,
    GPT2EduForSequenceClassification,
    GPT2EduForTokenClassification,
)

try:
    sys.path.insert(0, str(transformers_sources.fetch()))
except RuntimeError as error:  # no package registry reachable: nothing to run these tests with
    pytest.skip(str(error), allow_module_level=True)

from test_transformers_suite import GPT2EduModelTester  # noqa: E402
from transformers_tests.test_modeling_common import ModelTesterMixin  # noqa: E402


class GPT2EduHeadsTest(ModelTesterMixin, unittest.TestCase):
    all_model_classes = (GPT2EduForSequenceClassification, GPT2EduForTokenClassification, GPT2EduForQuestionAnswering)
    test_can_init_all_missing_weights_before_2023 = True  # as in test_transformers_suite.py

    def setUp(self):
        self.model_tester = GPT2EduModelTester(self)
        # The mixin tells a class's task (which labels to give it, which head checks apply) from transformers' static
        # tables of built-in class names; list our heads there, as a built-in model's are, for each test.
        for table, name in (
            (MODEL_MAPPING_NAMES, "GPT2EduModel"),
            (MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES, "GPT2EduForSequenceClassification"),
            (MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES, "GPT2EduForTokenClassification"),
            (MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES, "GPT2EduForQuestionAnswering"),
        ):
            patcher = patch.dict(table, {"gpt2edu": name})
            patcher.start()
            self.addCleanup(patcher.stop)


def test_the_head_checks_ran_on_the_heads():
    """The mixin's head checks exist in this transformers version and pick our classes by the patched tables."""
    for name in ("test_problem_types", "test_load_with_mismatched_shapes", "test_training"):
        assert hasattr(GPT2EduHeadsTest, name), name
    test = GPT2EduHeadsTest("test_problem_types")
    test.setUp()
    try:
        labelled = test._prepare_for_class(
            test.model_tester.prepare_config_and_inputs_for_common()[1],
            GPT2EduForSequenceClassification,
            return_labels=True,
        )
        assert labelled["labels"].shape == (test.model_tester.batch_size,)
        labelled = test._prepare_for_class({}, GPT2EduForQuestionAnswering, return_labels=True)
        assert {"start_positions", "end_positions"} <= labelled.keys()
    finally:
        test.doCleanups()
