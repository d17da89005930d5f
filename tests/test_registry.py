"""The registries: criteria (studylib.pruning) and decoder families (studylib.pruned_modeling).

The criteria registered here are the examples of docs/extending.md, executed from that file.
"""

import copy
import os
import re
import sys
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    LlamaConfig,
    LlamaForCausalLM,
    LlamaModel,
    LlavaConfig,
    LlavaForConditionalGeneration,
)

from studylib import cli
from studylib import pruned_modeling as PM
from studylib import pruning as P

sys.path.insert(0, os.path.dirname(__file__))
from test_pruning import (  # noqa: E402
    IMAGE_TOKEN, IMAGE_TOKENS_PER_IMAGE, batches, llava, logits, text_config, vision_config,
)

DOC = Path(__file__).resolve().parent.parent / "docs" / "extending.md"
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


# ------------------------------------------------------------------------------------------------
# The built-in criteria


def test_every_criterion_has_a_formula_and_declared_needs():
    assert P.criteria("layerwise") == ["bi", "angular", "loss", "deepest", "random"]
    assert P.criteria("widthwise") == ["taylor", "taylor-vector", "l1", "l2", "activation", "wanda", "random"]
    for paradigm in P.PARADIGMS:
        for name, c in P.CRITERIA[paradigm].items():
            assert (c.name, c.paradigm) == (name, paradigm) and c.needs in P.NEEDS, c
            assert re.search(r"S_\w+ [=~]|BI_i =|d\(l, n\) =", c.formula), c  # the docstring states the formula
            assert P.default_calib_samples(name, paradigm) == c.default_samples == (10 if "taylor" in name else 50)
    free = [c for p in P.PARADIGMS for c in P.criteria(p) if not P.needs_calibration(c, p)]
    assert free == ["deepest", "random", "l1", "l2", "random"]
    assert {c: P.CRITERIA["widthwise"][c].needs for c in ("taylor", "taylor-vector", "activation")} == {
        "taylor": "gradients", "taylor-vector": "gradients", "activation": "forward"}


def test_unknown_criterion_names_the_paradigm_and_the_registered_ones():
    with pytest.raises(ValueError, match=r"criterion for layerwise pruning must be one of bi, angular, loss, "
                                         r"deepest, random; got 'angualr' \(did you mean 'angular'\?\)"):
        P.get_criterion("layerwise", "angualr")
    with pytest.raises(ValueError, match=r"got 'taylor' \(a widthwise criterion\)"):
        P.compute_scores(llava(), "layerwise", "taylor", [])
    with pytest.raises(ValueError, match=r"unknown criterion 'wandaa' \(did you mean 'wanda'\?\); registered: "
                                         r"layerwise: bi, .*; widthwise: taylor, .*"):
        P.needs_calibration("wandaa")


def test_registration_is_checked():
    with pytest.raises(ValueError, match="already registered; pass replace=True"):
        P.layer_criterion("bi", needs="forward")
    with pytest.raises(ValueError, match="needs must be one of 'nothing', 'forward', 'gradients'; got 'data'"):
        P.width_criterion("x", needs="data")
    with pytest.raises(ValueError, match="samples must be an int of at least 1"):
        P.width_criterion("x", needs="forward", samples=0)
    with pytest.raises(ValueError, match="criterion name must be a non-empty string"):
        P.layer_criterion("a,b", needs="nothing")
    with pytest.raises(ValueError, match="needs a docstring stating the formula"):
        P.layer_criterion("undocumented", needs="nothing")(lambda model, info, batches, tokens, seed: [])
    assert "undocumented" not in P.criteria("layerwise")


# ------------------------------------------------------------------------------------------------
# A criterion added from outside (the examples of docs/extending.md)


@pytest.fixture
def doc_criteria():
    """Run the python blocks of docs/extending.md (they register bi-last and l1-weights); unregister after."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    namespace = {}
    try:
        for block in blocks:
            exec(block, namespace)
        yield namespace
    finally:
        for paradigm, name in (("layerwise", "bi-last"), ("widthwise", "l1-weights")):
            if name in P.CRITERIA[paradigm]:
                P.unregister_criterion(paradigm, name)


def test_the_documented_example_is_short(doc_criteria):
    first = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)[0]
    assert len(first.strip().splitlines()) <= 10
    assert len(DOC.read_text().splitlines()) < 80


def test_a_registered_criterion_is_used_everywhere(doc_criteria, tmp_path, capsys):
    assert P.criteria("layerwise")[-1] == "bi-last" and P.criteria("widthwise")[-1] == "l1-weights"
    assert P.needs_calibration("bi-last") and P.default_calib_samples("bi-last") == 50
    assert not P.needs_calibration("l1-weights")
    model, calib = llava("llama", layers=5), batches()
    block = P.describe_lm(model).blocks[2]
    with torch.no_grad():  # block 2 becomes the identity: its last-token BI is 0
        block.proj["o"].weight.zero_()
        block.proj["down"].weight.zero_()
    scores = P.compute_scores(model, "layerwise", "bi-last", calib)
    assert scores.criterion == "bi-last" and abs(scores.scores[2]) < 1e-6 and min(scores.scores) == scores.scores[2]
    assert P.make_plan(model, scores, None, n_layers=1).kept_layers == [0, 1, 3, 4]
    result = P.prune(model, "layerwise", "bi-last", 0.2, calib)
    assert result.plan.criterion == "bi-last" and len(result.plan.kept_layers) == 4
    with pytest.raises(ValueError, match="'bi-last' needs calibration batches; got none"):
        P.compute_scores(model, "layerwise", "bi-last", [])

    # widthwise: on a bias-free Llama, |w| over the weights only is exactly l1
    width = P.compute_scores(model, "widthwise", "l1-weights", [])
    l1 = P.compute_scores(model, "widthwise", "l1", [])
    assert (width.heads, width.kv_heads, width.neurons) == (l1.heads, l1.kv_heads, l1.neurons)
    pruned = P.prune(model, "widthwise", "l1-weights", 0.2, None)
    assert abs(pruned.plan.lm_ratio - 0.2) <= 0.01 and pruned.plan.criterion == "l1-weights"

    # the command line: --help lists it with its formula, --criterion accepts it, the error lists it
    with pytest.raises(SystemExit):
        cli.main(["prune", "--help"])
    text = " ".join(re.sub(r"-\n\s+", "-", capsys.readouterr().out).split())  # argparse wraps after hyphens
    assert "layerwise: bi, angular, loss, deepest, random, bi-last;" in text
    assert "bi-last (forward, 50 samples): Last-token BI: BI_i = 1 - E_s" in text
    missing = ["prune", str(tmp_path / "nope"), "--paradigm", "layerwise", "--ratio", "0.3",
               "--out", str(tmp_path / "o")]
    assert cli.main([*missing, "--criterion", "bi-last"]) == 2
    assert "checkpoint folder" in capsys.readouterr().err  # past the criterion check, stopped at the model
    assert cli.main([*missing, "--criterion", "bi-lats"]) == 2
    err = capsys.readouterr().err
    assert "--criterion must be one of bi, angular, loss, deepest, random, bi-last; got 'bi-lats'" in err
    assert "did you mean 'bi-last'?" in err
    with pytest.raises(ValueError, match=r"must be one of .*random, bi-last; got 'bi-lst' \(did you mean 'bi-last'"):
        P.compute_scores(model, "layerwise", "bi-lst", calib)

    assert P.unregister_criterion("layerwise", "bi-last").score is doc_criteria["bi_last_token"]
    assert "bi-last" not in P.criteria("layerwise")
    with pytest.raises(ValueError, match="must be one of bi, angular, loss, deepest, random; got 'bi-last'"):
        P.compute_scores(model, "layerwise", "bi-last", calib)


def test_a_criterion_giving_the_wrong_shape_is_a_clear_error():
    @P.width_criterion("too-few", needs="nothing")
    def too_few(model, info, batches, reduction, seed):
        """Broken on purpose: S = 0 for one head per block."""
        return [([0.0], [0.0], [0.0]) for _ in info.blocks]

    try:
        with pytest.raises(ValueError, match=r"criterion 'too-few' must give per block the scores of its"):
            P.compute_scores(llava(), "widthwise", "too-few", [])
    finally:
        P.unregister_criterion("widthwise", "too-few")


# ------------------------------------------------------------------------------------------------
# Decoder families


def test_built_in_families_and_their_pruned_classes():
    for model_type, family in PM.FAMILIES.items():
        assert family.config.model_type == model_type
        config, model, causal = PM.PRUNED_CLASSES[model_type]
        assert config.model_type == "pruned_" + model_type
        assert type(AutoConfig.for_model("pruned_" + model_type)) is config
        assert model.__name__ == f"Pruned{family.model.__name__}"
        assert causal.__name__ == f"Pruned{family.causal_lm.__name__}"
    assert PM.PRUNED_CLASSES["llama"][0].__name__ == "PrunedLlamaConfig"  # checkpoints saved before still load
    assert PM.FAMILIES["phi"].mlp == {"up": "fc1", "down": "fc2"} and PM.FAMILIES["qwen2"].attention == PM.ATTENTION


class AliasConfig(LlamaConfig):
    model_type = "llama_alias"


class AliasModel(LlamaModel):
    config_class = AliasConfig


class AliasForCausalLM(LlamaForCausalLM):
    config_class = AliasConfig


# a new decoder family with Llama's attribute names, as transformers knows it
AutoConfig.register("llama_alias", AliasConfig, exist_ok=True)
AutoModel.register(AliasConfig, AliasModel, exist_ok=True)
AutoModelForCausalLM.register(AliasConfig, AliasForCausalLM, exist_ok=True)


@pytest.fixture
def alias_family():
    """The alias as a prunable family: one registry entry (removed after the test)."""
    try:
        yield PM.register_family(PM.Family(AliasConfig, AliasModel, AliasForCausalLM))  # the one entry
    finally:
        PM.FAMILIES.pop("llama_alias", None)
        PM.PRUNED_CLASSES.pop("llama_alias", None)


def alias_llava(layers=4):
    torch.manual_seed(0)
    text = AliasConfig(**{k: v for k, v in text_config("llama", layers).to_dict().items() if k != "model_type"})
    config = LlavaConfig(vision_config=vision_config(), text_config=text, image_token_id=IMAGE_TOKEN,
                         image_seq_length=IMAGE_TOKENS_PER_IMAGE)
    return LlavaForConditionalGeneration(config).eval()


def test_a_registered_family_is_prunable_both_ways(alias_family, tmp_path):
    model, calib, probe = alias_llava(), batches(), batches(n=1, seed=1)[0]
    assert P.describe_lm(model).family == "llama_alias"
    assert alias_family[0].model_type == "pruned_llama_alias"
    for paradigm, criterion in (("widthwise", "taylor"), ("layerwise", "bi")):
        result = P.prune(model, paradigm, criterion, 0.3, calib)
        assert P.count_params(result.model)[0] == result.plan.lm_params_after
        text = result.model.config.text_config
        assert text.model_type == ("pruned_llama_alias" if paradigm == "widthwise" else "llama_alias")
        P.save_pruned(result.model, result.plan, result.scores, tmp_path / paradigm)
        reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path / paradigm).eval()
        assert torch.equal(logits(reloaded, probe), logits(result.model, probe))
    same = P.apply_plan(copy.deepcopy(model), result.plan)
    assert torch.equal(logits(same, probe), logits(result.model, probe))


def test_an_unregistered_family_is_an_error_naming_the_registered_ones():
    with pytest.raises(ValueError, match="decoder family 'llama_alias'.* one of llama, mistral, .*phi3"):
        P.describe_lm(alias_llava())
    with pytest.raises(ValueError, match="must name a stock family"):
        PM.register_family(PM.Family(PM.PRUNED_CLASSES["llama"][0], LlamaModel, LlamaForCausalLM))
