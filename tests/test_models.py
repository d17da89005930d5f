import json

import pytest
import torch

from studylib import collate as C
from studylib import data as D
from studylib import models as M
from studylib import teacher as T


def test_unknown_preset_lists_valid_names():
    with pytest.raises(ValueError, match="valid presets are: llava-tiny, bunny-tiny, llava-small"):
        M.get_preset("llava-huge")


def test_llava_small_size_and_small_vocabulary(tiny_processor):
    p = M.get_preset("llava-small")
    model = M.build_model(p, M.build_processor(p, tiny_processor.tokenizer))
    sizes = M.param_breakdown(model)
    assert 4e6 <= sizes["total"] <= 15e6
    lm = model.model.language_model
    emb = lm.embed_tokens.weight.numel() + model.lm_head.weight.numel()
    assert emb / sizes["lm"] < 0.10, "embeddings are a minor share of the LM"
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    assert model.config.text_config.model_type == "llama"


def test_image_token_count_matches_processor(tiny_processor):
    from PIL import Image

    ids = tiny_processor(text=["USER: <image>\nx ASSISTANT:"], images=[Image.new("RGB", (32, 32))])["input_ids"][0]
    image_id = tiny_processor.tokenizer.convert_tokens_to_ids("<image>")
    assert list(ids).count(image_id) == C.num_image_tokens(tiny_processor) == 16


@pytest.mark.parametrize("preset", ["llava-tiny", "bunny-tiny"])
def test_tiny_presets_train_save_and_reload_exactly(preset, tmp_path, cache_dir):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    cfg = T.TeacherConfig(preset=preset, n_train=100, stage1_steps=1, max_steps=3, batch_size=4)
    metrics = T.train_teacher(cfg, tmp_path / "m", cache_dir)
    log = json.loads((tmp_path / "m" / "train_log.json").read_text())
    assert metrics["final_loss"] == log[-1]["loss"] and torch.isfinite(torch.tensor(float(log[-1]["loss"])))
    model, proc = M.load(tmp_path / "m")
    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path / "m").eval()
    proc2 = AutoProcessor.from_pretrained(tmp_path / "m")
    expected_vision = "CLIPVisionModel" if preset.startswith("llava") else "SiglipVisionModel"
    assert type(model.model.vision_tower).__name__ == expected_vision
    recs = D.generate_records("scene-qa", 3, 0)
    prompts = [C.prompt_text(r["conversations"][0]["value"]) for r in recs]
    proc.tokenizer.padding_side = proc2.tokenizer.padding_side = "left"
    a = proc(text=prompts, images=[r["image"] for r in recs], padding=True, return_tensors="pt")
    b = proc2(text=prompts, images=[r["image"] for r in recs], padding=True, return_tensors="pt")
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["pixel_values"], b["pixel_values"])
    with torch.no_grad():
        assert torch.equal(model(**a).logits, reloaded(**b).logits)
    out = model.generate(**a, max_new_tokens=3, do_sample=False)
    assert out.shape[1] <= a["input_ids"].shape[1] + 3


def test_teacher_training_is_deterministic(tmp_path, cache_dir):
    cfg = T.TeacherConfig(preset="llava-tiny", n_train=100, stage1_steps=1, max_steps=3, batch_size=4, seed=7)
    T.train_teacher(cfg, tmp_path / "a", cache_dir)
    T.train_teacher(cfg, tmp_path / "b", cache_dir)
    la = json.loads((tmp_path / "a" / "train_log.json").read_text())
    lb = json.loads((tmp_path / "b" / "train_log.json").read_text())
    assert [r["loss"] for r in la] == [r["loss"] for r in lb]
    from safetensors.torch import load_file

    wa, wb = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_teacher_packs_embedded_presets_and_keys_its_cache_on_it(tmp_path, cache_dir):
    cfg = T.TeacherConfig(preset="llava-tiny", n_train=100, stage1_steps=0, max_steps=2, batch_size=8)
    assert T.pack_to(cfg) == T.PACK_TO and T.pack_to(T.TeacherConfig("gemma-270m")) == 0
    assert T.config_hash(cfg) != T.config_hash(T.TeacherConfig(**{**cfg.__dict__, "pack_to": 0}))
    assert T.config_hash(cfg) == T.config_hash(T.TeacherConfig(**{**cfg.__dict__, "threads": 1}))
    metrics = T.train_teacher(cfg, tmp_path / "t", cache_dir)
    assert metrics["pack_to"] == T.PACK_TO and metrics["final_loss"] > 0


def test_ensure_teacher_caches(tiny_teacher, cache_dir):
    cfg = T.TeacherConfig(preset="llava-tiny", n_train=200, stage1_steps=2, max_steps=4, batch_size=8)
    assert T.ensure_teacher(cfg, tiny_teacher.parent, cache_dir) == tiny_teacher  # no retraining
    assert not (tiny_teacher / "_trainer").exists()


def test_offline_hub_id_fails_fast(monkeypatch):
    import time

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.time()
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE=1"):
        M.load("llava-hf/llava-1.5-7b-hf")
    assert time.time() - t0 < 1.0
