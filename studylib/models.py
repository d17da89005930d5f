"""Embedded models: LLaVA-architecture presets built from stock transformers configs, plus the
tokenizer and processor, all made offline.

Presets mirror the study's two families:
- `llava-*`: CLIP-style vision tower -> 2-layer GELU MLP projector -> Llama decoder (LLaVA-1.5 / Vicuna);
- `bunny-*`: SigLIP vision tower -> 2-layer GELU MLP projector -> Phi decoder (Bunny / Phi-2).

Every model is a plain `LlavaForConditionalGeneration`: `save_pretrained` / `from_pretrained` and
`AutoModelForImageTextToText` work as for any hub checkpoint. Two differences from the real LLaVA, both
because nothing here is pretrained: the vision tower is trained too, and features come from its last
layer (`vision_feature_layer=-1`) instead of the penultimate one, so that no vision layer is dead weight.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import data as D

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>", "<image>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}USER: "
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %}"
    " ASSISTANT:{% else %} {% for c in m['content'] %}{{ c['text'] }}{% endfor %}</s>{% endif %}{% endfor %}"
)


@dataclass(frozen=True)
class Preset:
    """Sizes of an embedded LLaVA-style model (vision tower, projector, decoder)."""

    vision: str  # "clip" or "siglip"
    decoder: str  # "llama" or "phi"
    vision_hidden: int
    vision_layers: int
    vision_heads: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab_size: int = 512
    image_size: int = D.IMAGE_SIZE
    patch_size: int = 8
    extra: dict[str, Any] = field(default_factory=dict)


PRESETS: dict[str, Preset] = {
    "llava-tiny": Preset("clip", "llama", 32, 2, 2, 64, 4, 4, 4, 128),
    "bunny-tiny": Preset("siglip", "phi", 32, 2, 2, 64, 4, 4, 4, 128),
    "llava-small": Preset("clip", "llama", 128, 3, 4, 192, 8, 6, 6, 512),
}


def get_preset(name: str) -> Preset:
    D.check_names("preset", [name], list(PRESETS))
    return PRESETS[name]


# ----------------------------------------------------------------------------------------------
# Tokenizer and processor


def training_texts(n: int = 2000, seed: int = 0) -> list[str]:
    """Questions and answers the tokenizer is trained on (a sample of every family, no images drawn)."""
    recs = []
    for split in ["train"] + D.BENCHMARKS:
        recs += D.generate_records(split, n if split == "train" else 100, seed)
    return [t["value"].replace("<image>\n", "") for r in recs for t in r["conversations"]]


def build_tokenizer(vocab_size: int = 512, seed: int = 0):
    """Byte-level BPE trained on the generated text (digits always split, so numbers read digit by digit).

    Byte-level means any user text still encodes; the small vocabulary keeps embeddings a minor share of the LM.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(training_texts(seed=seed), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        extra_special_tokens={"image_token": "<image>"}, padding_side="left",
    )


def build_processor(preset: Preset | str, tokenizer=None):
    """`LlavaProcessor` = image processor (resize, normalise) + tokenizer + the `<image>` expansion rule."""
    from transformers import CLIPImageProcessor, LlavaProcessor, SiglipImageProcessor

    p = get_preset(preset) if isinstance(preset, str) else preset
    tokenizer = tokenizer or build_tokenizer(p.vocab_size)
    s = p.image_size
    if p.vision == "clip":
        ip = CLIPImageProcessor(size={"shortest_edge": s}, crop_size={"height": s, "width": s})
        strategy, extra = "default", 1  # CLS token is produced, then dropped
    else:
        ip = SiglipImageProcessor(size={"height": s, "width": s})
        strategy, extra = "full", 0
    return LlavaProcessor(image_processor=ip, tokenizer=tokenizer, patch_size=p.patch_size,
                          vision_feature_select_strategy=strategy, num_additional_image_tokens=extra,
                          chat_template=CHAT_TEMPLATE)


def num_image_tokens(processor) -> int:
    """Image tokens per image: (size / patch)^2 + extra tokens, minus the CLS token for the "default" strategy."""
    ip = processor.image_processor
    size = ip.crop_size["height"] if getattr(ip, "do_center_crop", False) else ip.size.get("height", ip.size.get("shortest_edge"))
    n = (size // processor.patch_size) ** 2 + processor.num_additional_image_tokens
    return n - 1 if processor.vision_feature_select_strategy == "default" else n


# ----------------------------------------------------------------------------------------------
# Model


def build_config(preset: Preset | str, tokenizer):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, PhiConfig, SiglipVisionConfig

    p = get_preset(preset) if isinstance(preset, str) else preset
    vkw = dict(hidden_size=p.vision_hidden, intermediate_size=4 * p.vision_hidden, num_hidden_layers=p.vision_layers,
               num_attention_heads=p.vision_heads, image_size=p.image_size, patch_size=p.patch_size)
    vision = CLIPVisionConfig(projection_dim=p.vision_hidden, **vkw) if p.vision == "clip" else SiglipVisionConfig(**vkw)
    tkw = dict(vocab_size=len(tokenizer), hidden_size=p.hidden, num_hidden_layers=p.layers,
               num_attention_heads=p.heads, num_key_value_heads=p.kv_heads, intermediate_size=p.intermediate,
               max_position_embeddings=256, pad_token_id=tokenizer.pad_token_id,
               bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, **p.extra)
    text = LlamaConfig(**tkw) if p.decoder == "llama" else PhiConfig(**tkw)
    return LlavaConfig(
        vision_config=vision, text_config=text, image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-1, vision_feature_select_strategy="default" if p.vision == "clip" else "full",
        image_seq_length=(p.image_size // p.patch_size) ** 2, tie_word_embeddings=False,
    )


def build_model(preset: Preset | str, processor, seed: int = 0):
    """A freshly initialised `LlavaForConditionalGeneration` for a preset (deterministic in `seed`)."""
    from transformers import LlavaForConditionalGeneration

    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(build_config(preset, processor.tokenizer))
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    model.generation_config.eos_token_id = processor.tokenizer.eos_token_id
    return model


def count_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def param_breakdown(model) -> dict[str, int]:
    """Parameters of the vision tower, projector and language model (decoder + embeddings + head)."""
    m = model.model
    lm = count_params(m.language_model) + count_params(model.lm_head)
    return {"vision": count_params(m.vision_tower), "projector": count_params(m.multi_modal_projector),
            "lm": lm, "total": count_params(model)}


def load(path: str | Path, dtype=torch.float32):
    """Load a checkpoint and its processor from a local folder (never the hub unless it is a hub id).

    Offline (`HF_HUB_OFFLINE=1`), a path that does not exist fails at once with a message naming the switch.
    """
    from transformers import AutoModelForImageTextToText, AutoProcessor

    path = str(path)
    if not Path(path).exists() and os.environ.get("HF_HUB_OFFLINE") == "1":
        raise FileNotFoundError(f"{path!r} is not a local folder and HF_HUB_OFFLINE=1 forbids the hub; "
                                "pass a checkpoint folder, or unset HF_HUB_OFFLINE to download")
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=dtype)
    processor = AutoProcessor.from_pretrained(path)
    return model.eval(), processor
