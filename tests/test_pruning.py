"""Tests of studylib.pruning on tiny random models (every decoder family inside LLaVA, and causal LMs).

Tiny LLaVA: CLIP vision tower on 16x16 images with 8x8 patches -> 4 patches + CLS; with
vision_feature_select_strategy 'default' LLaVA drops CLS, so each image fills 4 image tokens.
"""

import copy
import json

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    CLIPVisionConfig,
    Gemma3TextConfig,
    GemmaConfig,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    MistralConfig,
    Phi3Config,
    Phi3ForCausalLM,
    PhiConfig,
    Qwen2Config,
    Qwen3Config,
)

from studylib import pruning as P
from studylib.pruned_modeling import is_pruned_config

VOCAB, IMAGE_TOKEN, IMAGE_TOKENS_PER_IMAGE = 100, 99, 4
FAMILIES = ["llama", "llama-gqa", "mistral", "qwen2", "qwen3", "gemma", "gemma3", "phi", "phi3"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def text_config(family: str, layers: int = 4):
    heads, kv = 4, 2 if family in ("llama-gqa", "mistral", "gemma3") else 4
    cls = {
        "llama": LlamaConfig, "llama-gqa": LlamaConfig, "mistral": MistralConfig, "qwen2": Qwen2Config,
        "qwen3": Qwen3Config, "gemma": GemmaConfig, "gemma3": Gemma3TextConfig, "phi": PhiConfig, "phi3": Phi3Config,
    }[family]
    kwargs = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=layers, num_attention_heads=heads,
        num_key_value_heads=kv, vocab_size=VOCAB, max_position_embeddings=128,
        pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )
    if family in ("qwen3", "gemma", "gemma3"):
        kwargs["head_dim"] = 8
    return cls(**kwargs)


def vision_config():
    return CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=16, patch_size=8
    )


def llava(family: str = "llama", layers: int = 4, seed: int = 0):
    torch.manual_seed(seed)
    config = LlavaConfig(
        vision_config=vision_config(), text_config=text_config(family, layers),
        image_token_id=IMAGE_TOKEN, image_seq_length=IMAGE_TOKENS_PER_IMAGE,
    )
    return LlavaForConditionalGeneration(config).eval()


def causal_lm(cls=LlamaForCausalLM, family="llama", layers=4, seed=0):
    torch.manual_seed(seed)
    return cls(text_config(family, layers)).eval()


def batches(n=2, batch=2, seq=12, seed=0, image=True):
    """Random calibration batches; the first sample of each batch ends with 3 pad tokens."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(3, IMAGE_TOKEN, (batch, seq), generator=g)
        mask = torch.ones(batch, seq, dtype=torch.long)
        ids[0, -3:], mask[0, -3:] = 0, 0
        b = {"input_ids": ids, "attention_mask": mask}
        if image:
            ids[:, 1 : 1 + IMAGE_TOKENS_PER_IMAGE] = IMAGE_TOKEN
            b["pixel_values"] = torch.randn(batch, 3, 16, 16, generator=g)
        out.append(b)
    return out


def logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


def check_generate(model, batch):
    out = model.generate(**batch, max_new_tokens=3, do_sample=False)
    assert out.shape == (batch["input_ids"].shape[0], batch["input_ids"].shape[1] + 3)


def check_params(model, plan):
    lm, total = P.count_params(model)
    assert (lm, total) == (plan.lm_params_after, plan.model_params_after)


# ------------------------------------------------------------------------------------------------
# Adapter


def test_describe_lm_llava_gqa():
    info = P.describe_lm(llava("llama-gqa"))
    assert info.family == "llama" and len(info.blocks) == 4 and info.image_token_id == IMAGE_TOKEN
    b = info.blocks[0]
    assert (b.num_heads, b.num_kv_heads, b.head_dim, b.intermediate_size) == (4, 2, 8, 64)
    assert set(b.proj) == {"q", "k", "v", "o", "gate", "up", "down"}


def test_describe_lm_fused_phi3_and_phi():
    b = P.describe_lm(causal_lm(Phi3ForCausalLM, "phi3")).blocks[0]
    assert set(b.proj) == {"qkv", "o", "gate_up", "down"} and (b.num_heads, b.num_kv_heads) == (4, 4)
    b = P.describe_lm(llava("phi")).blocks[0]
    assert set(b.proj) == {"q", "k", "v", "o", "up", "down"} and b.proj["o"] is b.attn.dense


def test_describe_lm_llava_next():
    config = LlavaNextConfig(
        vision_config=vision_config(), text_config=text_config("qwen2"), image_token_id=IMAGE_TOKEN,
        image_grid_pinpoints=[[16, 16]],
    )
    info = P.describe_lm(LlavaNextForConditionalGeneration(config))
    assert info.family == "qwen2" and len(info.blocks) == 4


def test_unsupported_architecture():
    gpt2 = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=VOCAB))
    with pytest.raises(ValueError, match="LlavaForConditionalGeneration"):
        P.describe_lm(gpt2)


# ------------------------------------------------------------------------------------------------
# Every family, both paradigms: generate, save, reload with equal logits


@pytest.mark.parametrize("family", FAMILIES)
def test_family_prune_generate_save_reload(family, tmp_path):
    model, calib = llava(family), batches()
    probe = batches(n=1, seed=1)[0]
    for paradigm, criterion in (("widthwise", "taylor"), ("layerwise", "bi")):
        result = P.prune(model, paradigm, criterion, 0.3, calib)
        pruned, plan = result.model, result.plan
        check_params(pruned, plan)
        if paradigm == "widthwise":
            assert abs(plan.lm_ratio - 0.3) <= 0.01
            assert is_pruned_config(pruned.config.text_config)  # first and last layers keep their width
            for b in P.describe_lm(pruned).blocks:
                assert b.num_heads % b.num_kv_heads == 0
        else:
            assert plan.kept_layers == [0, 1, 3] or len(plan.kept_layers) == 3
            assert pruned.config.text_config.num_hidden_layers == 3
        check_generate(pruned, probe)
        out = tmp_path / paradigm
        P.save_pruned(pruned, plan, result.scores, out)
        assert {"pruning_plan.json", "importance.json", "config.json", "model.safetensors"} <= {
            p.name for p in out.iterdir()
        }
        reloaded = AutoModelForImageTextToText.from_pretrained(out).eval()
        assert torch.equal(logits(reloaded, probe), logits(pruned, probe))
    assert logits(model, probe).shape[-1] == VOCAB  # the original is untouched


@pytest.mark.parametrize("cls,family", [(LlamaForCausalLM, "llama"), (Phi3ForCausalLM, "phi3")])
def test_causal_lm_prune_save_reload(cls, family, tmp_path):
    model, calib = causal_lm(cls, family), batches(image=False)
    probe = batches(n=1, seed=1, image=False)[0]
    for paradigm, criterion in (("widthwise", "l2"), ("layerwise", "angular")):
        result = P.prune(model, paradigm, criterion, 0.3, calib)
        check_params(result.model, result.plan)
        check_generate(result.model, probe)
        P.save_pruned(result.model, result.plan, result.scores, tmp_path / paradigm)
        reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / paradigm).eval()
        assert torch.equal(logits(reloaded, probe), logits(result.model, probe))


def test_head_count_refused_by_llama_config_still_saves(tmp_path):
    """Llama with 3 of 4 heads in every layer: LlamaConfig refuses 32 % 3, so the subclass is used."""
    model, probe = llava("llama"), batches(n=1)[0]
    scores = P.compute_scores(model, "widthwise", "l1", [])
    plan = P.make_plan(model, scores, None, layers=range(4), widths=(3, 3, 48))
    pruned = P.apply_plan(copy.deepcopy(model), plan)
    assert is_pruned_config(pruned.config.text_config)
    P.save_pruned(pruned, plan, scores, tmp_path)
    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    assert torch.equal(logits(reloaded, probe), logits(pruned, probe))


def test_uniform_widths_use_stock_config():
    model = llava("llama-gqa")
    scores = P.compute_scores(model, "widthwise", "l1", [])
    plan = P.make_plan(model, scores, None, layers=range(4), widths=(2, 1, 32))
    pruned = P.apply_plan(copy.deepcopy(model), plan)
    config = pruned.config.text_config
    assert type(config) is LlamaConfig
    widths = (config.num_attention_heads, config.num_key_value_heads, config.intermediate_size, config.head_dim)
    assert widths == (2, 1, 32, 8)


def test_global_ranking_per_layer_widths(tmp_path):
    model, calib, probe = llava("qwen2"), batches(), batches(n=1, seed=1)[0]
    scores = P.compute_scores(model, "widthwise", "taylor", calib)
    plan = P.make_plan(model, scores, 0.25, global_ranking=True)
    assert abs(plan.lm_ratio - 0.25) <= 0.01 and plan.global_ranking
    pruned = P.apply_plan(copy.deepcopy(model), plan)
    check_params(pruned, plan)
    P.save_pruned(pruned, plan, scores, tmp_path)
    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    assert torch.equal(logits(reloaded, probe), logits(pruned, probe))


# ------------------------------------------------------------------------------------------------
# Invariants


@pytest.mark.parametrize("paradigm,criterion", [("widthwise", "taylor"), ("layerwise", "bi")])
def test_ratio_zero_is_bit_identical(paradigm, criterion):
    model, calib = llava("gemma3"), batches()
    result = P.prune(model, paradigm, criterion, 0.0, calib)
    assert result.plan.lm_ratio == 0.0
    assert torch.equal(logits(result.model, calib[0]), logits(model, calib[0]))


@pytest.mark.parametrize("paradigm,criterion", [("widthwise", "wanda"), ("layerwise", "loss")])
def test_plan_reproduces_model_and_is_idempotent(paradigm, criterion, tmp_path):
    model, calib = llava("phi3"), batches()
    result = P.prune(model, paradigm, criterion, 0.3, calib)
    P.save_pruned(result.model, result.plan, result.scores, tmp_path)
    plan = P.PruningPlan.load(tmp_path / "pruning_plan.json")
    assert plan == result.plan
    again = P.apply_plan(copy.deepcopy(model), plan)
    twice = P.apply_plan(P.apply_plan(copy.deepcopy(model), plan), plan)
    for other in (again, twice):
        a, b = result.model.state_dict(), other.state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_scores_computed_once_reused_for_every_ratio():
    model, calib = llava("llama", layers=6), batches()
    scores = P.compute_scores(model, "widthwise", "taylor", calib)
    for ratio in (0.15, 0.3, 0.45):
        result = P.prune(model, "widthwise", "taylor", ratio, None, scores=scores)
        assert result.scores is scores and abs(result.plan.lm_ratio - ratio) <= 0.01
        assert result.plan.calibration_fingerprint == scores.calibration_fingerprint


def test_fingerprint_and_importance_json(tmp_path):
    model = llava("llama")
    a, b = P.calibration_fingerprint(batches(seed=0)), P.calibration_fingerprint(batches(seed=1))
    assert a != b and a == P.calibration_fingerprint(batches(seed=0))
    scores = P.compute_scores(model, "widthwise", "activation", batches())
    result = P.prune(model, "widthwise", "activation", 0.2, None, scores=scores)
    P.save_pruned(result.model, result.plan, scores, tmp_path)
    importance = json.loads((tmp_path / "importance.json").read_text())
    assert importance["criterion"] == "activation" and len(importance["scores"]) == 4
    assert len(importance["scores"][1]["heads"]) == 4 and len(importance["scores"][1]["neurons"]) == 64
    plan = json.loads((tmp_path / "pruning_plan.json").read_text())
    assert plan["calibration_fingerprint"] == a and plan["paradigm"] == "widthwise"


def test_layer_removal_updates_config_and_indices():
    model = llava("gemma3", layers=6)
    config = model.config.text_config
    config.layer_types = ["sliding_attention", "full_attention"] * 3
    plan = P.make_plan(model, P.compute_scores(model, "layerwise", "deepest", []), None, n_layers=2)
    assert plan.kept_layers == [0, 1, 2, 5]  # deepest first, the last block kept
    P.apply_plan(model, plan)
    assert config.num_hidden_layers == 4
    assert config.layer_types == ["sliding_attention", "full_attention", "sliding_attention", "full_attention"]
    assert [layer.self_attn.layer_idx for layer in model.model.language_model.layers] == [0, 1, 2, 3]
    check_generate(model, batches(n=1)[0])


def test_bi_tokens_image_text():
    model, calib = llava("llama"), batches()
    scores = {t: P.compute_scores(model, "layerwise", "bi", calib, tokens=t).scores for t in P.TOKENS}
    assert scores["image"] != scores["text"]
    with pytest.raises(ValueError, match="tokens='image' needs a multimodal model"):
        P.compute_scores(causal_lm(), "layerwise", "bi", batches(image=False), tokens="image")


# ------------------------------------------------------------------------------------------------
# Known answers


def test_identity_block_has_zero_bi_and_goes_first():
    model, calib = llava("llama", layers=5), batches()
    block = P.describe_lm(model).blocks[2]
    with torch.no_grad():
        block.proj["o"].weight.zero_()
        block.proj["down"].weight.zero_()
    scores = P.compute_scores(model, "layerwise", "bi", calib)
    assert abs(scores.scores[2]) < 1e-6 and min(scores.scores) == scores.scores[2]
    angular = P.compute_scores(model, "layerwise", "angular", calib)
    assert min(angular.angular[1]) == angular.angular[1][2]
    for s in (scores, angular):
        plan = P.make_plan(model, s, None, n_layers=1)
        assert plan.kept_layers == [0, 1, 3, 4]
        pruned = P.apply_plan(copy.deepcopy(model), plan)
        torch.testing.assert_close(logits(pruned, calib[0]), logits(model, calib[0]))


def kill_head_and_neuron(model, head=1, neuron=5):
    """Zero head `head` (q/k/v rows and bias, o columns) and neuron `neuron` (in rows, out column) in
    every block."""
    with torch.no_grad():
        for b in P.describe_lm(model).blocks:
            hd, H, KV, inter = b.head_dim, b.num_heads, b.num_kv_heads, b.intermediate_size
            rows = slice(head * hd, (head + 1) * hd)
            if "qkv" in b.proj:
                for start in (0, H * hd, (H + KV) * hd):
                    b.proj["qkv"].weight[start:][rows] = 0
            else:
                for role in "qkv":
                    b.proj[role].weight[rows] = 0
                    if b.proj[role].bias is not None:
                        b.proj[role].bias[rows] = 0
            b.proj["o"].weight[:, rows] = 0
            in_rows = [neuron, inter + neuron] if "gate_up" in b.proj else [neuron]
            for role in ("gate", "up", "gate_up"):
                if role in b.proj:
                    b.proj[role].weight[in_rows] = 0
                    if b.proj[role].bias is not None:
                        b.proj[role].bias[in_rows] = 0
            b.proj["down"].weight[:, neuron] = 0


DEAD_CASES = [(c, "sum") for c in P.criteria("widthwise") if c != "random"] + [("l1", "mean"), ("taylor", "max")]


@pytest.mark.parametrize("family", ["llama", "phi", "phi3"])
@pytest.mark.parametrize("criterion,reduction", DEAD_CASES)
def test_dead_groups_rank_last_and_removing_them_changes_nothing(family, criterion, reduction):
    model, calib = llava(family), batches()
    kill_head_and_neuron(model)
    scores = P.compute_scores(model, "widthwise", criterion, calib, reduction=reduction)
    for i in range(4):
        for values, dead in ((scores.heads[i], 1), (scores.kv_heads[i], 1), (scores.neurons[i], 5)):
            assert values[dead] == min(values) and sorted(values)[1] > values[dead]
    plan = P.make_plan(model, scores, None, layers=range(4), widths=(3, 3, 63))
    assert all(h == [0, 2, 3] and 5 not in n for h, n in zip(plan.kept_heads, plan.kept_neurons))
    pruned = P.apply_plan(copy.deepcopy(model), plan)
    torch.testing.assert_close(logits(pruned, calib[0]), logits(model, calib[0]), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# Ratios


@pytest.mark.parametrize("round_to", [1, 8])
def test_widthwise_ratio_within_one_point(round_to):
    model = llava("llama-gqa", layers=6)
    scores = P.compute_scores(model, "widthwise", "l2", [])
    for ratio in (0.05, 0.15, 0.3, 0.4):
        plan = P.make_plan(model, scores, ratio, round_to=round_to)
        assert abs(plan.lm_ratio - ratio) <= 0.01, (ratio, plan.lm_ratio)
        assert plan.model_ratio < plan.lm_ratio  # the vision tower is never pruned
        pruned = P.apply_plan(copy.deepcopy(model), plan)
        check_params(pruned, plan)
        for i, b in enumerate(P.describe_lm(pruned).blocks):
            assert b.num_heads % b.num_kv_heads == 0
            assert b.intermediate_size % round_to == 0
            if i in (0, 5):  # default range skips the first and last blocks
                assert (b.num_heads, b.intermediate_size) == (4, 64)


def test_layerwise_ratio_is_reported():
    model = llava("llama", layers=6)
    scores = P.compute_scores(model, "layerwise", "random", [], seed=3)
    plan = P.make_plan(model, scores, 0.3)
    removed = 6 - len(plan.kept_layers)
    assert removed >= 1 and 0 < plan.lm_ratio < 1 and plan.requested_ratio == 0.3
    assert plan.lm_params_after == P.count_params(P.apply_plan(copy.deepcopy(model), plan))[0]


def test_too_large_ratio_says_maximum():
    model = llava("llama")
    width = P.compute_scores(model, "widthwise", "l1", [])
    with pytest.raises(ValueError, match="maximum achievable ratio is 0.[0-9]+"):
        P.make_plan(model, width, 0.9)
    layer = P.compute_scores(model, "layerwise", "deepest", [])
    with pytest.raises(ValueError, match="maximum achievable ratio is 0.[0-9]+"):
        P.make_plan(model, layer, 0.95)


# ------------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5, "0.3", None])
def test_bad_ratio(ratio):
    with pytest.raises(ValueError, match=r"ratio must be a number in \[0, 1\)"):
        P.prune(llava(), "widthwise", "l1", ratio, [])


def test_bad_names_and_ranges():
    model, calib = llava(), batches(n=1)
    with pytest.raises(ValueError, match="paradigm must be one of 'layerwise', 'widthwise'; got 'depth'"):
        P.prune(model, "depth", "bi", 0.2, calib)
    with pytest.raises(ValueError, match="criterion for widthwise pruning must be one of .*taylor.*; got 'bi'"):
        P.prune(model, "widthwise", "bi", 0.2, calib)
    with pytest.raises(ValueError, match="criterion for layerwise pruning must be one of .*; got 'magic'"):
        P.compute_scores(model, "layerwise", "magic", calib)
    with pytest.raises(ValueError, match="reduction must be one of"):
        P.compute_scores(model, "widthwise", "l1", calib, reduction="median")
    with pytest.raises(ValueError, match=r"layers must be decoder block indices in \[0, 4\); got \[7\]"):
        P.prune(model, "widthwise", "l1", 0.1, calib, layers=[1, 7])
    with pytest.raises(ValueError, match=r"layers must be decoder block indices in \[0, 4\); got \[-1\]"):
        P.prune(model, "layerwise", "deepest", 0.1, calib, layers=[-1, 2])
    with pytest.raises(ValueError, match=r"n_layers must be an int in \[0, 3\] \(the model has 4 decoder blocks"):
        P.prune(model, "layerwise", "deepest", None, calib, n_layers=5)
    with pytest.raises(ValueError, match="round_to must be a positive int"):
        P.prune(model, "widthwise", "l1", 0.1, calib, round_to=0)
    with pytest.raises(ValueError, match="needs calibration batches"):
        P.prune(model, "widthwise", "taylor", 0.1, [])


def test_plan_for_another_model_is_refused():
    model = llava("llama")
    plan = P.make_plan(model, P.compute_scores(model, "layerwise", "deepest", []), 0.3)
    with pytest.raises(ValueError, match="apply it to the original model"):
        P.apply_plan(llava("llama", layers=6), plan)
