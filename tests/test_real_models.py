"""Loading real checkpoints: hub ids and local folders, remote-code refusal, and the Bunny adapter.

Bunny-v1.0-3B itself is not available here (no hub), so the adapter is tested on a tiny stand-in with
exactly Bunny's module tree and tensor names (built from transformers' PhiModel and SiglipVisionModel,
with Bunny's shortened SigLIP encoder and Identity head) and random weights.
"""

import json
import time

import pytest
import torch
from PIL import Image
from torch import nn

from studylib import bunny as BN
from studylib import collate as C
from studylib import models as M
from studylib import pruning as P

PROMPT = BN.SYSTEM + " USER: <image>\nWhat is in the picture? ASSISTANT:"


# ----------------------------------------------------------------------------------------------
# The stand-in: Bunny's attribute names, tiny sizes


def phi2_like_tokenizer(with_image_token: bool = False):
    """A byte-level BPE with Phi-2's special token (<|endoftext|> as bos/eos/unk, no pad, no BOS added)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>"] + (["<image>"] if with_image_token else [])
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([PROMPT.replace("<image>", ""), "USER: ASSISTANT: a red circle, two squares"] * 5,
                            trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   unk_token="<|endoftext|>")


def standin_configs(vocab_size: int):
    from transformers import PhiConfig, SiglipVisionConfig

    # SigLIP-so400m's head count, eps and activation (what the adapter assumes); 3 layers, the last deleted.
    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=16,
                                image_size=16, patch_size=4, layer_norm_eps=1e-6, hidden_act="gelu_pytorch_tanh")
    text = PhiConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                     num_attention_heads=4, partial_rotary_factor=0.5, rope_theta=10000.0, hidden_act="gelu_new",
                     max_position_embeddings=128, bos_token_id=0, eos_token_id=0, tie_word_embeddings=False)
    return vision, text


class SigLipVisionModel(nn.Module):  # Bunny's SigLipVisionModel: .vision_model = the SigLIP transformer
    def __init__(self, config):
        from transformers import SiglipVisionModel as HF

        super().__init__()
        self.vision_model = HF(config)  # in transformers 5 this class is the transformer itself


class SigLipVisionTower(nn.Module):  # Bunny's SigLipVisionTower.load_model / forward
    """v1.0 (Bunny-v1_0-3B): last layer deleted, head -> Identity, hidden_states[-1]; later Bunny code
    (whole=True): the whole SigLIP with its head, hidden_states[-2]."""

    def __init__(self, config, whole: bool = False):
        super().__init__()
        self.vision_tower = SigLipVisionModel(config)
        self.select_layer = -2 if whole else -1
        if not whole:
            del self.vision_tower.vision_model.encoder.layers[-1:]
            self.vision_tower.vision_model.head = nn.Identity()

    def forward(self, images):
        return self.vision_tower.vision_model(images, output_hidden_states=True).hidden_states[self.select_layer]


def build_standin(vocab_size: int = 320, seed: int = 0, whole_siglip: bool = False):
    """(model, config.json dict) of a tiny BunnyPhiForCausalLM look-alike with random weights."""
    from transformers import PhiModel

    vision, text = standin_configs(vocab_size)

    class BunnyPhiModel(PhiModel):
        def __init__(self, config):
            super().__init__(config)
            self.vision_tower = SigLipVisionTower(vision, whole_siglip)
            self.mm_projector = nn.Sequential(nn.Linear(vision.hidden_size, config.hidden_size), nn.GELU(),
                                              nn.Linear(config.hidden_size, config.hidden_size))

    class BunnyPhiForCausalLM(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.model = BunnyPhiModel(config)
            self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)

    torch.manual_seed(seed)
    model = BunnyPhiForCausalLM(text).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    cfg = {**text.to_dict(), "model_type": "bunny-phi", "architectures": ["BunnyPhiForCausalLM"],
           "auto_map": {"AutoConfig": "configuration_bunny_phi.BunnyPhiConfig",
                        "AutoModelForCausalLM": "modeling_bunny_phi.BunnyPhiForCausalLM"},
           "mm_hidden_size": vision.hidden_size, "mm_projector_type": "mlp2x_gelu",
           "mm_vision_tower": "google/siglip-so400m-patch14-384", "image_aspect_ratio": "pad",
           "tokenizer_padding_side": "right", "use_mm_proj": True}
    return model, cfg


@torch.no_grad()
def bunny_forward(model, tokenizer, prompt: str, pixel_values) -> torch.Tensor:
    """Bunny's own forward, by hand: tokenise around <image> with -200 in its place, vision features ->
    projector -> spliced into the text embeddings there -> Phi decoder -> lm_head."""
    chunks = [tokenizer(c).input_ids for c in prompt.split("<image>")]
    ids = torch.tensor(chunks[0] + [BN.IMAGE_TOKEN_INDEX] + chunks[1])
    at = int((ids == BN.IMAGE_TOKEN_INDEX).nonzero())
    features = model.model.mm_projector(model.model.vision_tower(pixel_values))[0]
    embed = model.model.embed_tokens
    x = torch.cat([embed(ids[:at]), features, embed(ids[at + 1:])])[None]
    return model.lm_head(model.model(inputs_embeds=x).last_hidden_state)


def image():
    g = torch.Generator().manual_seed(1)
    return Image.fromarray((torch.rand(12, 20, 3, generator=g) * 255).to(torch.uint8).numpy())  # not square


@pytest.fixture(scope="module")
def standin(one_thread):
    model, cfg = build_standin()
    return model, cfg


def write_bunny_folder(folder, model, cfg, tokenizer, fmt="safetensors"):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(cfg))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file(state, folder / "model.safetensors")
    else:
        torch.save(state, folder / "pytorch_model.bin")
    tokenizer.save_pretrained(folder)
    return folder


# ----------------------------------------------------------------------------------------------
# The Bunny adapter


@pytest.mark.parametrize("case", ["v1.0", "resized", "whole-siglip"])
def test_bunny_conversion_is_exact(standin, case):
    """v1.0: Bunny-v1_0-3B's layout, spare embedding rows for <image> (as Phi-2's 51200 > 50295 tokens);
    resized: no spare row; whole-siglip: the later Bunny tower (27 layers + head, features from layer -2)."""
    bunny, cfg = standin
    tok = phi2_like_tokenizer()
    spare_rows = case != "resized"
    if case == "resized":  # the tokenizer fills the vocabulary: <image> needs a new embedding row
        bunny, cfg = build_standin(vocab_size=len(tok))
    elif case == "whole-siglip":
        bunny, cfg = build_standin(whole_siglip=True)
    model, proc = BN.to_llava(bunny, cfg, tok)
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    image_id = tok.convert_tokens_to_ids("<image>")
    assert model.config.image_token_id == image_id and (image_id < cfg["vocab_size"]) == spare_rows
    assert model.get_input_embeddings().weight.shape[0] == (cfg["vocab_size"] if spare_rows else len(tok))

    # (a) every source tensor lands, unchanged, under its LLaVA name
    target = model.state_dict()
    _, dropped = BN.map_state_dict(bunny.state_dict())
    assert all(".head." in k for k in dropped) and bool(dropped) == (case == "whole-siglip")
    for key, value in bunny.state_dict().items():
        if key not in dropped:
            new = next(dst + key[len(src):] for src, dst in BN.RENAMES if key.startswith(src))
            assert torch.equal(target[new][: value.shape[0]], value), key
    depth, layer = (3, -2) if case == "whole-siglip" else (2, -1)  # v1.0: the shortened tower, all of it used
    assert len(model.model.vision_tower.encoder.layers) == depth and model.config.vision_feature_layer == layer

    # (b) the converted model computes exactly what Bunny computes
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is in the picture?"}]}]
    assert proc.apply_chat_template(messages, add_generation_prompt=True) == PROMPT
    inputs = proc(text=[PROMPT], images=[image()], return_tensors="pt")
    assert int((inputs["input_ids"] == image_id).sum()) == C.num_image_tokens(proc) == 16
    with torch.no_grad():
        logits = model(**inputs).logits
    expected = bunny_forward(bunny, tok, PROMPT, inputs["pixel_values"])
    assert logits.shape[1] == expected.shape[1]
    torch.testing.assert_close(logits[..., : expected.shape[-1]], expected, rtol=0, atol=1e-5)
    out = model.generate(**inputs, max_new_tokens=2, do_sample=False)
    assert out.shape[1] <= inputs["input_ids"].shape[1] + 2


def test_bunny_preprocessing_matches_bunny(standin):
    """Pad to a square with the mean colour (Bunny's expand2square), then Bunny's SigLipImageProcessor steps."""
    import numpy as np
    from transformers.image_transforms import normalize, rescale, resize
    from transformers.image_utils import ChannelDimension, PILImageResampling

    bunny, cfg = standin
    _, proc = BN.to_llava(bunny, cfg, phi2_like_tokenizer())
    img = image()
    square = Image.new("RGB", (20, 20), (127, 127, 127))
    square.paste(img, (0, (20 - 12) // 2))
    x = resize(np.array(square), size=(16, 16), resample=PILImageResampling.BICUBIC, data_format=ChannelDimension.FIRST)
    x = normalize(rescale(x, 1 / 255, data_format=ChannelDimension.FIRST), [0.5] * 3, [0.5] * 3,
                  data_format=ChannelDimension.FIRST)
    got = proc.image_processor(images=[img], return_tensors="pt")["pixel_values"][0]
    torch.testing.assert_close(got, torch.from_numpy(np.asarray(x)).float(), rtol=0, atol=1e-6)


def test_converted_bunny_prunes_saves_and_reloads(standin, tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    bunny, cfg = standin
    model, proc = BN.to_llava(bunny, cfg, phi2_like_tokenizer())
    batch = dict(proc(text=[PROMPT], images=[image()], return_tensors="pt"))
    result = P.prune(model, "layerwise", "bi", None, [batch], n_layers=1)
    assert len(result.model.model.language_model.layers) == 2 and result.plan.paradigm == "layerwise"
    P.save_pruned(result.model, result.plan, result.scores, tmp_path / "pruned", proc)
    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path / "pruned").eval()
    proc2 = AutoProcessor.from_pretrained(tmp_path / "pruned")
    batch2 = proc2(text=[PROMPT], images=[image()], return_tensors="pt")
    assert torch.equal(batch["input_ids"], batch2["input_ids"])
    assert torch.equal(batch["pixel_values"], batch2["pixel_values"])
    with torch.no_grad():
        assert torch.equal(result.model(**batch).logits, reloaded(**batch2).logits)
    reloaded2, _ = M.load(tmp_path / "pruned")  # a stock checkpoint now: no flag needed
    assert type(reloaded2).__name__ == "LlavaForConditionalGeneration"


def test_unmapped_or_missing_bunny_weights_are_errors(standin):
    bunny, cfg = standin
    state = dict(bunny.state_dict())
    with pytest.raises(BN.ConversionError, match=r"model\.extra_adapter\.weight"):
        BN.to_llava({**state, "model.extra_adapter.weight": torch.zeros(2)}, cfg, phi2_like_tokenizer())
    with pytest.raises(BN.ConversionError, match=r"lm_head\.bias is not zero"):
        BN.to_llava({**state, "lm_head.bias": torch.ones(320)}, cfg, phi2_like_tokenizer())
    gone = {k: v for k, v in state.items() if k != "model.final_layernorm.bias"}
    with pytest.raises(BN.ConversionError, match=r"model\.language_model\.final_layernorm\.bias"):
        BN.to_llava(gone, cfg, phi2_like_tokenizer())
    with pytest.raises(BN.ConversionError, match="only 'mlp2x_gelu'"):
        BN.to_llava(state, {**cfg, "mm_projector_type": "ldp"}, phi2_like_tokenizer())
    # known-harmless extras are dropped by name, with the reason
    _, dropped = BN.map_state_dict({**state, "model.layers.0.self_attn.rotary_emb.inv_freq": torch.ones(2),
                                         "lm_head.bias": torch.zeros(320)})
    assert set(dropped) == {"model.layers.0.self_attn.rotary_emb.inv_freq", "lm_head.bias"}


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_bunny_folder_needs_the_flag_then_loads_converted(standin, tmp_path, fmt):
    bunny, cfg = standin
    tok = phi2_like_tokenizer()
    folder = write_bunny_folder(tmp_path / "bunny", bunny, cfg, tok, fmt)
    (folder / "training_args.bin").write_bytes(b"not weights: must never be read")
    with pytest.raises(M.RemoteCodeRefused, match="--trust-remote-code") as err:
        M.load(folder)
    assert "BunnyPhiForCausalLM" in str(err.value) and "auto_map" in str(err.value)
    with pytest.raises(M.RemoteCodeRefused, match="--trust-remote-code"):
        M.checkpoint_config(folder)  # what the command line checks before loading anything
    assert M.decoder_layers(M.checkpoint_config(folder, trust_remote_code=True)) == 3
    model, proc = M.load(folder, trust_remote_code=True)
    assert type(model).__name__ == "LlavaForConditionalGeneration" and model.dtype == torch.float32
    inputs = proc(text=[PROMPT], images=[image()], return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits
    expected = bunny_forward(bunny, tok, PROMPT, inputs["pixel_values"])
    torch.testing.assert_close(logits[..., :320], expected, rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# Loading: bad input


def test_remote_code_folder_is_refused_without_the_flag(tmp_path):
    folder = tmp_path / "custom"
    folder.mkdir()
    cfg = {"model_type": "llava", "architectures": ["LlavaForConditionalGeneration"],
           "auto_map": {"AutoModelForImageTextToText": "modeling_custom.CustomLlava"}}
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(M.RemoteCodeRefused, match="--trust-remote-code") as err:
        M.load(folder)
    assert "auto_map" in str(err.value) and "run" in str(err.value)
    (folder / "config.json").write_text(json.dumps({"model_type": "my-vlm", "architectures": ["MyVLM"]}))
    with pytest.raises(M.RemoteCodeRefused, match="'my-vlm'.*--trust-remote-code"):
        M.load(folder)
    with pytest.raises(ValueError, match="MyVLM checkpoint; studylib handles LlavaForConditionalGeneration"):
        M.load(folder, trust_remote_code=True)  # refused before any of its code runs


@pytest.mark.parametrize("name", ["./no/such/checkpoint", "~/no-such-checkpoint-x1", "/tmp/no/such/ckpt",
                                  "a/b/c", "tests/no-such-checkpoint"])
def test_missing_local_path_is_named(name):
    with pytest.raises(FileNotFoundError, match="does not exist") as err:
        M.load(name)
    assert repr(name) in str(err.value)


def test_hub_id_online_checks_the_config_before_downloading_weights(standin, tmp_path, monkeypatch):
    """The hub is faked: only config.json is fetched before the trust check; then no code, no .bin."""
    import huggingface_hub
    import huggingface_hub.constants

    bunny, cfg = standin
    folder = write_bunny_folder(tmp_path / "snapshot", bunny, cfg, phi2_like_tokenizer())
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    calls = []
    monkeypatch.setattr(huggingface_hub, "hf_hub_download",
                        lambda repo, name: calls.append(("file", name)) or str(folder / name))
    monkeypatch.setattr(huggingface_hub, "list_repo_files",
                        lambda repo: ["config.json", "model.safetensors", "pytorch_model.bin", "modeling_bunny_phi.py"])
    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda repo, allow_patterns: calls.append(("snapshot", allow_patterns)) or str(folder))
    with pytest.raises(M.RemoteCodeRefused, match="--trust-remote-code"):
        M.load("BAAI/Bunny-v1_0-3B")
    assert calls == [("file", "config.json")]
    model, _ = M.load("BAAI/Bunny-v1_0-3B", trust_remote_code=True)
    kind, patterns = calls[-1]
    assert kind == "snapshot" and "*.safetensors" in patterns and not {"*.bin", "*.py"} & set(patterns)
    assert type(model).__name__ == "LlavaForConditionalGeneration"


@pytest.mark.parametrize("name", ["llava-hf/llava-1.5-7b-hf", "BAAI/Bunny-v1_0-3B"])
def test_hub_id_offline_fails_at_once(monkeypatch, name):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for call in (lambda: M.load(name, trust_remote_code=True), lambda: M.checkpoint_config(name)):
        t0 = time.perf_counter()
        with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE=1") as err:
            call()
        assert time.perf_counter() - t0 < 1.0
        assert f"hf download {name} --local-dir DIR" in str(err.value)


def test_stock_llava_folder_loads_safetensors_only(tmp_path):
    tok = phi2_like_tokenizer(with_image_token=True)
    tok.pad_token = "<|endoftext|>"
    proc = M.build_processor("llava-tiny", tok)
    model = M.build_model("llava-tiny", proc)
    model.save_pretrained(tmp_path / "m")
    proc.save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "training_args.bin").write_bytes(b"a pickle would go here")
    assert M.decoder_layers(M.checkpoint_config(tmp_path / "m")) == 4
    loaded, _ = M.load(tmp_path / "m")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
