"""Bunny (BAAI/Bunny-v1_0-3B: SigLIP-so400m + 2-layer GELU MLP + Phi-2) -> a stock `LlavaForConditionalGeneration`.

Bunny is a remote-code checkpoint; `to_llava` maps its weights by name onto the stock LLaVA classes, so its code is
never run (`models.load` reads the folder and calls it). Every tensor is renamed (`RENAMES`) or dropped for a stated
reason (`DROPPED`); anything else is a `ConversionError`.

Bunny's module tree (bunny/model/..., the remote code `BunnyPhiForCausalLM`, model_type "bunny-phi"):
  model.embed_tokens, model.layers[i] (Phi: self_attn.{q,k,v}_proj/dense, mlp.fc1/fc2, input_layernorm),
  model.final_layernorm, lm_head (no bias: BunnyPhiForCausalLM builds it with bias=False),
  model.vision_tower.vision_tower.vision_model = SigLIP, in one of two layouts of Bunny's siglip_encoder.py:
    v1.0 (Bunny-v1_0-3B): last encoder layer deleted (`del encoder.layers[-1:]`), pooling head replaced by
      Identity (no head tensors), features `hidden_states[-1]` of the shortened encoder;
    later code: the whole SigLIP (head tensors present), features `hidden_states[-2]` (select_layer=-2);
  both are SigLIP's penultimate layer before post_layernorm; the layout is told apart by the head tensors;
  model.mm_projector = Sequential(Linear, GELU, Linear) ("mlp2x_gelu").
Bunny splices the projected features in place of one token -200 (IMAGE_TOKEN_INDEX); LLaVA expands an
`<image>` token to as many copies as there are features and fills them in: the same sequence of embeddings.
Hence: vision_feature_layer -1 (v1.0) or -2 on a vision tower with the depth found in the weights,
vision_feature_select_strategy="full" (SigLIP has no CLS token), projector_hidden_act="gelu" (nn.GELU).
"""

from __future__ import annotations

import re
from typing import Any

import torch


class ConversionError(ValueError):
    """Weights that do not map exactly onto the stock LLaVA classes (nothing is dropped silently)."""


MODEL_TYPES = ("bunny-phi",)
ARCHITECTURES = ("BunnyPhiForCausalLM",)
IMAGE_TOKEN_INDEX = -200
SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
                "The assistant gives helpful, detailed, and polite answers to the user's questions.")
# Bunny's conversation "bunny": system + " " + "USER: <image>\n{q} " + "ASSISTANT: {a}<|endoftext|>" + ...
CHAT_TEMPLATE = (
    "{% if messages and messages[0]['role'] == 'system' %}"
    "{% if messages[0]['content'] is string %}{{ messages[0]['content'] }}{% else %}"
    "{% for c in messages[0]['content'] if c['type'] == 'text' %}{{ c['text'] }}{% endfor %}{% endif %}"
    "{% else %}" + SYSTEM + "{% endif %}{{ ' ' }}"
    "{% for m in messages if m['role'] != 'system' %}"
    "{% if m['role'] == 'user' %}USER: "
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for c in m['content'] if c['type'] == 'image' %}<image>\n{% endfor %}"
    "{% for c in m['content'] if c['type'] == 'text' %}{{ c['text'] }}{% endfor %}{% endif %}{{ ' ' }}"
    "{% else %}ASSISTANT: "
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for c in m['content'] if c['type'] == 'text' %}{{ c['text'] }}{% endfor %}{% endif %}{{ eos_token }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
# Bunny's SigLipVisionConfig() defaults (siglip-so400m-patch14-384), for what the weights do not determine;
# width, MLP width, depth, patch size and number of patches are read from the weights.
SIGLIP_SO400M: dict[str, Any] = {"num_attention_heads": 16, "layer_norm_eps": 1e-6,
                                 "hidden_act": "gelu_pytorch_tanh", "image_size": 384}
_VISION = "model.vision_tower.vision_tower.vision_model."
# (Bunny key prefix, LlavaForConditionalGeneration key prefix); every tensor must match exactly one.
RENAMES: tuple[tuple[str, str], ...] = (
    (_VISION, "model.vision_tower."),
    ("model.mm_projector.0.", "model.multi_modal_projector.linear_1."),
    ("model.mm_projector.2.", "model.multi_modal_projector.linear_2."),
    ("model.embed_tokens.", "model.language_model.embed_tokens."),
    ("model.layers.", "model.language_model.layers."),
    ("model.final_layernorm.", "model.language_model.final_layernorm."),
    ("lm_head.weight", "lm_head.weight"),
)
# Tensors that may be dropped (regex on the Bunny key -> why nothing is lost); anything else unmapped is an error.
DROPPED: tuple[tuple[str, str], ...] = (
    (r"\.rotary_emb\.(inv_freq|cos_cached|sin_cached)$", "rotary-embedding buffer, recomputed from the config"),
    (r"^model\.vision_tower\.vision_tower\.vision_model\.embeddings\.position_ids$", "position-id buffer, recomputed"),
    (r"^model\.vision_tower\.vision_tower\.vision_model\.head\.",
     "SigLIP pooling head: never used by Bunny (its image features are hidden states)"),
)
_PHI_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
             "num_key_value_heads", "resid_pdrop", "embd_pdrop", "attention_dropout", "hidden_act",
             "max_position_embeddings", "initializer_range", "layer_norm_eps", "use_cache", "rope_theta",
             "rope_scaling", "rope_parameters", "partial_rotary_factor", "qk_layernorm", "bos_token_id", "eos_token_id")


def map_state_dict(state_dict: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Rename Bunny tensors to `LlavaForConditionalGeneration` names: (renamed, {dropped key: why}).

    A key that is neither renamed (`RENAMES`) nor droppable (`DROPPED`, or an all-zero
    `lm_head.bias`) raises `ConversionError` naming it.
    """
    renamed: dict[str, torch.Tensor] = {}
    dropped: dict[str, str] = {}
    unmapped: list[str] = []
    for key, value in state_dict.items():
        why = next((reason for pattern, reason in DROPPED if re.search(pattern, key)), None)
        if key == "lm_head.bias":
            if torch.count_nonzero(value):
                raise ConversionError("lm_head.bias is not zero, but LlavaForConditionalGeneration's LM head "
                                      "has no bias")
            why = "all-zero bias of the LM head (LlavaForConditionalGeneration's head has none)"
        if why:
            dropped[key] = why
            continue
        target = next((dst + key[len(src):] for src, dst in RENAMES if key.startswith(src)), None)
        if target is None:
            unmapped.append(key)
        else:
            renamed[target] = value
    if unmapped:
        raise ConversionError(f"{len(unmapped)} Bunny tensor(s) have no place in LlavaForConditionalGeneration and "
                              f"are not known to be safe to drop: {', '.join(unmapped[:8])}"
                              + (" ..." if len(unmapped) > 8 else ""))
    return renamed, dropped


def _config_dict(config) -> dict:
    return dict(config) if isinstance(config, dict) else config.to_dict()


def _check_config(cfg: dict) -> None:
    projector = cfg.get("mm_projector_type", "mlp2x_gelu")
    if projector != "mlp2x_gelu":
        raise ConversionError(f"Bunny projector {projector!r}: only 'mlp2x_gelu' maps onto LLaVA's projector")
    tower = str(cfg.get("mm_vision_tower", "siglip"))
    if "sig" not in tower.lower() or cfg.get("use_s2"):
        raise ConversionError(f"Bunny vision tower {tower!r}{' with S2' if cfg.get('use_s2') else ''}: "
                              "only single-scale SigLIP towers are converted")


def vision_config(state_dict: dict[str, torch.Tensor], bunny_config, overrides: dict | None = None):
    """`SiglipVisionConfig` of Bunny's vision tower: sizes from the weights (original Bunny key names), the rest
    from `SIGLIP_SO400M` updated by `overrides`; no pooling head."""
    import math

    from transformers import SiglipVisionConfig

    v = _VISION
    try:
        patch = state_dict[v + "embeddings.patch_embedding.weight"]
        positions = state_dict[v + "embeddings.position_embedding.weight"]
        fc1 = state_dict[v + "encoder.layers.0.mlp.fc1.weight"]
    except KeyError as e:
        raise ConversionError(f"no SigLIP vision tower in the Bunny weights ({e.args[0]} is missing)") from None
    layers = {int(m.group(1)) for k in state_dict if (m := re.match(re.escape(v) + r"encoder\.layers\.(\d+)\.", k))}
    if layers != set(range(len(layers))):
        raise ConversionError(f"vision encoder layers are not numbered 0..{len(layers) - 1}: {sorted(layers)}")
    hidden, channels, p = patch.shape[0], patch.shape[1], patch.shape[2]
    side = math.isqrt(positions.shape[0])
    if side * side != positions.shape[0]:
        raise ConversionError(f"{positions.shape[0]} position embeddings are not a square grid of patches")
    kw = {**SIGLIP_SO400M, **(overrides or {})}
    if kw["image_size"] // p != side:
        if overrides and "image_size" in overrides:
            raise ConversionError(f"image_size {kw['image_size']} with patch {p} gives {(kw['image_size'] // p) ** 2} "
                                  f"patches, the weights have {side * side}")
        kw["image_size"] = side * p
    if hidden % kw["num_attention_heads"]:
        raise ConversionError(f"vision width {hidden} is not divisible by {kw['num_attention_heads']} heads; "
                              "pass vision_overrides={'num_attention_heads': ...}")
    mm_hidden = _config_dict(bunny_config).get("mm_hidden_size")
    if mm_hidden is not None and mm_hidden != hidden:
        raise ConversionError(f"config mm_hidden_size={mm_hidden} but the vision tower is {hidden} wide")
    return SiglipVisionConfig(hidden_size=hidden, intermediate_size=fc1.shape[0], num_hidden_layers=len(layers),
                              num_channels=channels, patch_size=p, vision_use_head=False, **kw)


def feature_layer(state_dict: dict[str, torch.Tensor]) -> int:
    """Which hidden state of the vision tower Bunny feeds the projector: -1 for the v1.0 layout (last layer
    deleted, no head tensors), -2 when the whole SigLIP with its pooling head was kept (select_layer=-2)."""
    return -2 if any(k.startswith(_VISION + "head.") for k in state_dict) else -1


def text_config(bunny_config):
    """The stock `PhiConfig` of Bunny's decoder (Bunny's config is a PhiConfig subclass plus mm_* keys)."""
    from transformers import PhiConfig

    cfg = _config_dict(bunny_config)
    kw = {k: cfg[k] for k in _PHI_KEYS if cfg.get(k) is not None}
    return PhiConfig(**kw, tie_word_embeddings=False)


def _ensure_image_token(tokenizer, vocab_size: int) -> tuple[int, int | None]:
    """Add `<image>` to the tokenizer if missing (a special token that never merges with its neighbours).
    Returns (its id, the embedding size to resize to, or None when the id fits, e.g. in Phi-2's spare rows)."""
    from tokenizers import AddedToken

    if "<image>" not in tokenizer.get_vocab():
        tokenizer.add_tokens([AddedToken("<image>", special=True, normalized=False, lstrip=False, rstrip=False)],
                             special_tokens=True)
    token_id = tokenizer.convert_tokens_to_ids("<image>")
    return token_id, (max(len(tokenizer), token_id + 1) if token_id >= vocab_size else None)


def llava_image_processor(vision_config, bunny_config=None):
    """Bunny's preprocessing as a stock LLaVA image processor: pad to a square with the mean colour (Bunny's
    `image_aspect_ratio="pad"`, expand2square), bicubic resize to image_size, rescale, normalise with mean =
    std = 0.5 (PIL backend, as Bunny's own processor)."""
    try:
        from transformers import LlavaImageProcessorPil as ImageProcessor
    except ImportError:  # older transformers: the PIL implementation under the plain name
        from transformers import LlavaImageProcessor as ImageProcessor

    s = vision_config.image_size
    pad = _config_dict(bunny_config or {}).get("image_aspect_ratio", "pad") == "pad"
    return ImageProcessor(do_pad=pad, size={"height": s, "width": s}, do_center_crop=False, resample=3,
                          image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5], default_to_square=True)


def to_llava(source, bunny_config, tokenizer, image_processor=None, *, vision_overrides: dict | None = None,
             dtype: torch.dtype | None = None):
    """Convert Bunny (a loaded `BunnyPhiForCausalLM`, or its state dict) into a stock
    `LlavaForConditionalGeneration` with the same function, and a `LlavaProcessor` that builds its inputs.

    bunny_config: Bunny's config (dict from config.json, or the config object); tokenizer: Bunny's (Phi-2's),
    modified in place (`<image>` added if missing; a pad token = unk/eos if missing; left padding);
    image_processor: default `llava_image_processor`; vision_overrides: SigLIP settings the weights do not
    determine (default `SIGLIP_SO400M`); dtype: default that of the weights.
    Every tensor is mapped (`RENAMES`) or explicitly dropped (`DROPPED`); anything else, or a
    LLaVA weight left without a source, raises `ConversionError` naming it.
    """
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    cfg = _config_dict(bunny_config)
    _check_config(cfg)
    state = source.state_dict() if isinstance(source, torch.nn.Module) else dict(source)
    vision = vision_config(state, cfg, vision_overrides)
    renamed, _ = map_state_dict(state)
    text = text_config(cfg)
    embed = renamed.get("model.language_model.embed_tokens.weight")
    if embed is None or embed.shape[0] != text.vocab_size:
        rows = None if embed is None else embed.shape[0]
        raise ConversionError(f"embedding rows {rows} != vocab_size {text.vocab_size}")
    image_token_id, resize_to = _ensure_image_token(tokenizer, text.vocab_size)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    tokenizer.padding_side = "left"
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_id=image_token_id,
        vision_feature_layer=feature_layer(state),
        vision_feature_select_strategy="full", projector_hidden_act="gelu", multimodal_projector_bias=True,
        image_seq_length=(vision.image_size // vision.patch_size) ** 2, tie_word_embeddings=False,
    )
    with torch.device("meta"):
        expected = set(LlavaForConditionalGeneration(config).state_dict())
    missing, extra = sorted(expected - renamed.keys()), sorted(renamed.keys() - expected)
    if missing or extra:
        raise ConversionError(f"Bunny weights do not fill LlavaForConditionalGeneration: missing {missing[:8]}, "
                              f"unexpected {extra[:8]}")
    dtype = dtype or embed.dtype
    model = LlavaForConditionalGeneration.from_pretrained(
        None, config=config, state_dict={k: v.to(dtype) if v.is_floating_point() else v for k, v in renamed.items()},
        dtype=dtype)
    if resize_to is not None:  # no spare embedding row for <image>: its row is never read (image features replace it)
        model.resize_token_embeddings(resize_to, mean_resizing=False)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    processor = LlavaProcessor(
        image_processor=image_processor or llava_image_processor(vision, cfg), tokenizer=tokenizer,
        patch_size=vision.patch_size, vision_feature_select_strategy="full", num_additional_image_tokens=0,
        chat_template=CHAT_TEMPLATE, image_token="<image>")
    return model.eval(), processor
