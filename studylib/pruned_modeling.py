"""Checkpoints whose decoder layers have different widths, loadable with the Auto classes.

Why this file exists. After widthwise pruning a decoder layer may keep fewer attention heads,
key/value heads or MLP neurons than the config says. Stock transformers classes can store that only
when every layer has the same widths (then we just rewrite `num_attention_heads`,
`num_key_value_heads`, `intermediate_size` and an explicit `head_dim`, see `studylib.pruning`).
They cannot when

- the widths differ between layers (the study skips the first and last layers, or global ranking), or
- the config refuses the new head count (`LlamaConfig`, `Gemma2Config` and `Gemma3TextConfig` require
  `hidden_size % num_attention_heads == 0` even with an explicit `head_dim`).

The approach, in three small pieces:

1. `LayerConfig`: a read-through view of the text config that overrides three numbers for one layer.
   Attention and MLP modules of a pruned layer are built from it, so the stock module code sees the
   right widths (Phi-3 even reads `config.num_attention_heads` in `forward`). Everything else
   (`_attn_implementation`, `layer_types`, ...) is read live from the shared config.
2. One config subclass per decoder family, e.g. `PrunedLlamaConfig` (model_type `pruned_llama`). It keeps
   the original widths in the usual fields and adds per-layer lists `layer_num_attention_heads`,
   `layer_num_key_value_heads`, `layer_intermediate_size` (saved in config.json like any field).
3. Model subclasses (`PrunedLlamaModel`, `PrunedLlamaForCausalLM`, ...) that build the stock model and
   then rebuild each layer whose widths differ. They are registered with `AutoConfig`, `AutoModel` and
   `AutoModelForCausalLM`. LLaVA builds its language model with `AutoModel.from_config(text_config)`,
   so `AutoModelForImageTextToText.from_pretrained(dir)` reloads a pruned LLaVA exactly after
   `import studylib.pruned_modeling`, with no `trust_remote_code`.

Limits: caches that preallocate from the config (StaticCache) assume one width for every layer; the
default DynamicCache works. Only families listed in `FAMILIES` (or added with `register_family`) are
registered.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    Gemma2Config,
    Gemma2ForCausalLM,
    Gemma2Model,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    Gemma3TextModel,
    GemmaConfig,
    GemmaForCausalLM,
    GemmaModel,
    LlamaConfig,
    LlamaForCausalLM,
    LlamaModel,
    MistralConfig,
    MistralForCausalLM,
    MistralModel,
    Phi3Config,
    Phi3ForCausalLM,
    Phi3Model,
    PhiConfig,
    PhiForCausalLM,
    PhiModel,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen2Model,
    Qwen3Config,
    Qwen3ForCausalLM,
    Qwen3Model,
)

# The projections of a decoder block, by role -> attribute name (on `layer.self_attn` and `layer.mlp`).
ATTENTION = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj"}
MLP = {"gate": "gate_proj", "up": "up_proj", "down": "down_proj"}


@dataclass(frozen=True)
class Family:
    """A stock decoder family: its config, base model and causal LM classes, and the attribute names of the
    projections of a block by role (attention: q, k, v, o or a fused qkv, and o; MLP: gate, up, down, or up
    and down (fc1/fc2), or a fused gate_up and down). The defaults are Llama's names."""

    config: type
    model: type
    causal_lm: type
    attention: dict[str, str] = field(default_factory=lambda: dict(ATTENTION))
    mlp: dict[str, str] = field(default_factory=lambda: dict(MLP))


# The decoder families that can be pruned, by the decoder config's model_type: one entry per family.
FAMILIES: dict[str, Family] = {
    "llama": Family(LlamaConfig, LlamaModel, LlamaForCausalLM),
    "mistral": Family(MistralConfig, MistralModel, MistralForCausalLM),
    "qwen2": Family(Qwen2Config, Qwen2Model, Qwen2ForCausalLM),
    "qwen3": Family(Qwen3Config, Qwen3Model, Qwen3ForCausalLM),
    "gemma": Family(GemmaConfig, GemmaModel, GemmaForCausalLM),
    "gemma2": Family(Gemma2Config, Gemma2Model, Gemma2ForCausalLM),
    "gemma3_text": Family(Gemma3TextConfig, Gemma3TextModel, Gemma3ForCausalLM),
    "phi": Family(PhiConfig, PhiModel, PhiForCausalLM, attention={**ATTENTION, "o": "dense"},
                  mlp={"up": "fc1", "down": "fc2"}),
    "phi3": Family(Phi3Config, Phi3Model, Phi3ForCausalLM, attention={"qkv": "qkv_proj", "o": "o_proj"},
                   mlp={"gate_up": "gate_up_proj", "down": "down_proj"}),
}

PREFIX = "pruned_"
# the three per-layer lists a pruned config carries, and the config field each one overrides
LAYER_FIELDS = {
    "layer_num_attention_heads": "num_attention_heads",
    "layer_num_key_value_heads": "num_key_value_heads",
    "layer_intermediate_size": "intermediate_size",
}


class LayerConfig:
    """One layer's view of a text config: its own widths, every other attribute read from `config`."""

    def __init__(self, config, num_attention_heads: int, num_key_value_heads: int, intermediate_size: int):
        self.__dict__.update(
            _config=config,
            num_attention_heads=num_attention_heads,
            num_key_value_heads=num_key_value_heads,
            intermediate_size=intermediate_size,
        )

    def __getattr__(self, name):  # called only for names not set in __init__
        if name == "_config":  # not set yet (copy/pickle build the object without __init__)
            raise AttributeError(name)
        return getattr(self._config, name)

    def __repr__(self):
        widths = {k: self.__dict__[k] for k in LAYER_FIELDS.values()}
        return f"LayerConfig({type(self._config).__name__}, {widths})"


def layer_widths(config, i: int) -> tuple[int, int, int]:
    """(query heads, key/value heads, MLP neurons) of layer i: the per-layer lists if any, else the config."""
    widths = []
    for list_name, field in LAYER_FIELDS.items():
        values = getattr(config, list_name, None)
        widths.append(values[i] if values is not None else getattr(config, field))
    return tuple(widths)


def layer_config(config, i: int):
    """The config layer i should be built from: `config` itself when its widths are the config's."""
    widths = layer_widths(config, i)
    if widths == tuple(getattr(config, field) for field in LAYER_FIELDS.values()):
        return config
    return LayerConfig(config, *widths)


def rebuild_layers_with_own_widths(decoder: nn.Module, config) -> None:
    """Rebuild attention and MLP of every layer of `decoder` whose widths differ from the config's."""
    for i, layer in enumerate(decoder.layers):
        cfg = layer_config(config, i)
        if cfg is config:
            continue
        layer.self_attn = type(layer.self_attn)(cfg, layer_idx=i)
        layer.mlp = type(layer.mlp)(cfg)


def is_pruned_config(config) -> bool:
    return config.model_type.startswith(PREFIX)


def base_family(model_type: str) -> str:
    """'pruned_llama' -> 'llama'."""
    return model_type[len(PREFIX) :] if model_type.startswith(PREFIX) else model_type


def _make_family(model_type: str) -> tuple[type, type, type]:
    """Create and register PrunedXConfig, PrunedXModel and PrunedXForCausalLM for one stock family."""
    family = FAMILIES[model_type]
    config_cls, model_cls, causal_cls = family.config, family.model, family.causal_lm
    name = config_cls.__name__.removesuffix("Config")

    # No new dataclass fields: the per-layer lists are extra attributes, which configs save and load.
    attrs = {"model_type": PREFIX + model_type, "__module__": __name__}
    pruned_config = type(f"Pruned{name}Config", (config_cls,), attrs)

    def model_init(self, config):
        model_cls.__init__(self, config)
        rebuild_layers_with_own_widths(self, config)

    def causal_init(self, config):
        causal_cls.__init__(self, config)
        rebuild_layers_with_own_widths(self.model, config)

    common = {"config_class": pruned_config, "__module__": __name__}
    pruned_model = type(f"Pruned{model_cls.__name__}", (model_cls,), {**common, "__init__": model_init})
    pruned_causal = type(f"Pruned{causal_cls.__name__}", (causal_cls,), {**common, "__init__": causal_init})

    for cls in (pruned_config, pruned_model, pruned_causal):  # module attributes, so that pickle finds them
        globals()[cls.__name__] = cls
    AutoConfig.register(PREFIX + model_type, pruned_config, exist_ok=True)
    AutoModel.register(pruned_config, pruned_model, exist_ok=True)
    AutoModelForCausalLM.register(pruned_config, pruned_causal, exist_ok=True)
    return pruned_config, pruned_model, pruned_causal


# model_type -> (PrunedXConfig, PrunedXModel, PrunedXForCausalLM); built and registered on import
PRUNED_CLASSES: dict[str, tuple[type, type, type]] = {family: _make_family(family) for family in FAMILIES}


def register_family(family: Family) -> tuple[type, type, type]:
    """Add a decoder family under its config's model_type (from your own code: the entries above are the
    built-in ones) and register its pruned_<model_type> classes; returns them."""
    model_type = family.config.model_type
    if not model_type or model_type.startswith(PREFIX):
        raise ValueError(f"{family.config.__name__}.model_type must name a stock family; got {model_type!r}")
    FAMILIES[model_type] = family
    PRUNED_CLASSES[model_type] = _make_family(model_type)
    return PRUNED_CLASSES[model_type]
