"""Embedded models: LLaVA-architecture presets built from stock transformers configs, plus the
tokenizer and processor, all made offline.

Presets mirror the study's two families:
- `llava-*`: CLIP-style vision tower -> 2-layer GELU MLP projector -> Llama decoder (LLaVA-1.5 / Vicuna);
- `bunny-*`: SigLIP vision tower -> 2-layer GELU MLP projector -> Phi decoder (Bunny / Phi-2).

Every model is a plain `LlavaForConditionalGeneration`: `save_pretrained` / `from_pretrained` and
`AutoModelForImageTextToText` work as for any hub checkpoint. Two differences from the real LLaVA, both
because nothing here is pretrained: the vision tower is trained too, and features come from its last
layer (`vision_feature_layer=-1`) instead of the penultimate one, so that no vision layer is dead weight.

`load` opens real checkpoints too (local folders or hub ids): stock transformers LLaVA / LLaVA-NeXT
checkpoints as they are, and Bunny (`bunny-phi`, a remote-code checkpoint, only with
`trust_remote_code=True`) converted by `bunny.to_llava` into a stock `LlavaForConditionalGeneration`.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import bunny
from . import data as D
from . import pruned_modeling  # noqa: F401  registers pruned_* configs/models with the Auto classes

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


TOKENIZER_VERSION = "2"  # 2: trained on the templated text; part of the teacher's cache key


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
    # Trained on the text as `encode` writes it (chat template, answers), not on bare questions, so that the
    # merges fit what the model reads: " ASSISTANT:" is one token plus ":" instead of ten, " yes" and " no" one
    # token each, and a training example 43 tokens instead of 61 (fewer tokens a step).
    tok.train_from_iterator(D.template_pieces(seed=seed), trainer=trainer)
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


# ----------------------------------------------------------------------------------------------
# Loading checkpoints: local folders and hub ids; stock classes, and Bunny through an adapter
#
# Weights are never unpickled: *.safetensors when the checkpoint has them (`use_safetensors=True`),
# otherwise *.bin read by `torch.load(weights_only=True)` (tensors and plain containers only; transformers
# does the same and refuses older torch versions for which that is unsafe).

SUPPORTED_ARCHITECTURES = ("LlavaForConditionalGeneration", "LlavaNextForConditionalGeneration")
TRUST_FLAG = "--trust-remote-code"
_TRUE = {"1", "ON", "YES", "TRUE"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


class RemoteCodeRefused(ValueError):
    """A checkpoint that needs code shipped with it, opened without `trust_remote_code=True`."""


def offline_switch() -> str | None:
    """The setting that puts the Hugging Face hub offline, as `NAME=value` (e.g. "HF_HUB_OFFLINE=1"), or None."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        value = os.environ.get(var)
        if value and value.upper() in _TRUE:
            return f"{var}={value}"
    hub = sys.modules.get("huggingface_hub.constants")  # read once at import by huggingface_hub/transformers
    if hub is not None and getattr(hub, "HF_HUB_OFFLINE", False):
        return "HF_HUB_OFFLINE=1"
    return None


def looks_local(name: str) -> bool:
    """A path rather than a hub id: starts with '.', '/' or '~', has a backslash, a drive or more than one '/',
    is not a valid repo name, or its first part exists here (e.g. 'data/checkpoints/x' while data/ exists)."""
    if name.startswith((".", "/", "~")) or "\\" in name or re.match(r"^[A-Za-z]:", name):
        return True
    parts = name.split("/")
    return len(parts) > 2 or not _HUB_ID.match(name) or (len(parts) == 2 and Path(parts[0]).exists())


def _local_or_hub(name_or_path: str | Path) -> Path | str:
    """The local folder, or the hub id to download. Fails at once (no network attempt) for a missing local
    path, or for a hub id while offline."""
    name = str(name_or_path)
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise FileNotFoundError(f"{name!r} is a file, not a checkpoint folder")
    if looks_local(name):
        raise FileNotFoundError(f"checkpoint folder {name!r} does not exist (looked for {path.absolute()})")
    switch = offline_switch()
    if switch:
        raise FileNotFoundError(
            f"{name!r} is not a local folder, so it would be a Hugging Face hub id, but {switch} (offline mode) "
            f"forbids downloading. Download it where there is network access (`hf download {name} --local-dir DIR`) "
            f"and pass DIR, or unset {switch.split('=')[0]} to download it here.")
    return name


def results_home(name_or_path: str | Path, root: str | Path) -> Path:
    """Where results about a model are cached (its evaluations, pruned evaluations): the checkpoint folder
    itself, or `root/hub/<owner>--<name>` for a hub id (nothing is written into the hub's cache)."""
    path = Path(str(name_or_path)).expanduser()
    return path if path.is_dir() else Path(root) / "hub" / str(name_or_path).replace("/", "--")


def _read_json(path: Path) -> dict:
    """A JSON object from a checkpoint's file; a missing, unreadable or non-object file names itself."""
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{str(path.parent)!r} is not a checkpoint folder: it has no {path.name}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}): the checkpoint is damaged; re-save or re-download it") \
            from None
    if not isinstance(value, dict):
        raise ValueError(f"{path} holds a JSON {type(value).__name__}, not an object: the checkpoint is damaged")
    return value


PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json", "tokenizer_config.json",
                   "special_tokens_map.json", "generation_config.json")


def check_safetensors(path: Path) -> None:
    """Raise a ValueError naming `path` when its safetensors header does not read or does not cover the file
    (a truncated or otherwise damaged file); safetensors itself validates the header against the file size."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "pt") as f:
            f.keys()
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{path} is damaged ({e}); re-save or re-download it") from None


def check_weights(folder: Path) -> None:
    """Every weight file of a checkpoint folder reads: safetensors headers, or .bin through
    `torch.load(weights_only=True)`."""
    for f in weight_files(folder):
        if f.suffix == ".safetensors":
            check_safetensors(f)
        else:
            try:
                torch.load(f, map_location="meta", weights_only=True, mmap=True)
            except Exception as e:  # noqa: BLE001 - torch raises many kinds for a damaged pickle-free file
                raise ValueError(f"{f} is damaged ({type(e).__name__}: {e}); re-save or re-download it") from None


def checkpoint_kind(config: dict) -> str:
    """'bunny' (converted by `bunny.to_llava`), 'stock' (a transformers class) or 'remote' (needs the
    checkpoint's own code: an `auto_map`, or a model_type transformers does not know)."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    archs = config.get("architectures") or []
    if config.get("model_type") in bunny.MODEL_TYPES or any(a in bunny.ARCHITECTURES for a in archs):
        return "bunny"
    if "auto_map" in config or config.get("model_type") not in CONFIG_MAPPING:
        return "remote"
    return "stock"


def check_trust(name: str, config: dict, trust_remote_code: bool) -> str:
    """Return the checkpoint kind; refuse a remote-code checkpoint unless `trust_remote_code`, and a
    checkpoint whose architecture the rest of studylib cannot handle."""
    kind = checkpoint_kind(config)
    archs = config.get("architectures") or [config.get("model_type")]
    if kind != "stock" and not trust_remote_code:
        why = ("its config.json has an `auto_map`" if "auto_map" in config
               else f"transformers has no class for model_type {config.get('model_type')!r}")
        how = (" With the flag, studylib does not run that code: it maps the Bunny weights by name onto a stock "
               "LlavaForConditionalGeneration (see studylib.bunny.to_llava)." if kind == "bunny" else "")
        raise RemoteCodeRefused(
            f"{name!r} is a remote-code checkpoint ({', '.join(map(str, archs))}): {why}, so its loader is Python "
            f"code that comes with the checkpoint and would run on this machine. Refused by default; if you trust "
            f"its source, pass {TRUST_FLAG} (trust_remote_code=True).{how}")
    supported = ", ".join(SUPPORTED_ARCHITECTURES)
    known = set(config.get("architectures") or SUPPORTED_ARCHITECTURES) & set(SUPPORTED_ARCHITECTURES)
    if kind != "bunny" and not known:
        raise ValueError(f"{name!r} is a {', '.join(archs)} checkpoint; studylib handles {supported} "
                         f"and Bunny ({', '.join(bunny.MODEL_TYPES)}, converted with {TRUST_FLAG})")
    return kind


def checkpoint_config(name_or_path: str | Path, trust_remote_code: bool = False) -> dict:
    """config.json of a checkpoint (local, or only that file from the hub), checked with `check_trust`:
    what a command line validates before loading any weights."""
    where = _local_or_hub(name_or_path)
    if isinstance(where, Path):
        config = _read_json(where / "config.json")
    else:
        from huggingface_hub import hf_hub_download

        config = json.loads(Path(hf_hub_download(where, "config.json")).read_text())
    check_trust(str(name_or_path), config, trust_remote_code)
    return config


def decoder_layers(config: dict) -> int:
    """Number of decoder blocks of the language model, from a config.json dict (LLaVA or Bunny)."""
    text = config.get("text_config", config)
    n = text.get("num_hidden_layers") if isinstance(text, dict) else None
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        where = "text_config.num_hidden_layers" if "text_config" in config else "num_hidden_layers"
        raise ValueError(f"config.json has no valid {where} (got {n!r}): the checkpoint's config is damaged")
    return n


def _download(repo_id: str, trust_remote_code: bool) -> Path:
    """Download a hub checkpoint (config checked first, so a refused one costs no weight download):
    JSON, tokenizer files and safetensors weights (.bin only when there are no safetensors); code files
    only for a remote-code checkpoint opened with trust_remote_code (never for Bunny, whose code is not run)."""
    from huggingface_hub import list_repo_files, snapshot_download

    config = checkpoint_config(repo_id, trust_remote_code)
    files = list_repo_files(repo_id)
    weights = ["*.safetensors"] if any(f.endswith(".safetensors") for f in files) else ["*.bin"]
    patterns = ["*.json", "*.txt", "*.model", "*.jinja", "*.tiktoken", *weights]
    if checkpoint_kind(config) == "remote":
        patterns.append("*.py")
    return Path(snapshot_download(repo_id, allow_patterns=patterns))


def weight_files(folder: Path) -> list[Path]:
    """The model's weight files: the safetensors index / single file / shards, else the same for .bin
    (so training_args.bin, optimizer states and LoRA adapters are never read as weights)."""
    for ext, stem in (("safetensors", "model"), ("bin", "pytorch_model")):
        index = folder / f"{stem}.{ext}.index.json"
        if index.exists():
            return sorted({folder / f for f in _read_json(index)["weight_map"].values()})
        if (folder / f"{stem}.{ext}").exists():
            return [folder / f"{stem}.{ext}"]
        shards = sorted(folder.glob(f"{stem}-*-of-*.{ext}"))
        if shards:
            return shards
    raise FileNotFoundError(f"no model weights in {str(folder)!r} (model*.safetensors or pytorch_model*.bin); "
                            "a LoRA output must be merged into the base model first")


def read_state_dict(folder: Path, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint folder, without unpickling (safetensors, or torch.load(weights_only=True)),
    cast to `dtype` file by file (so only one shard is ever held twice)."""
    state: dict[str, torch.Tensor] = {}
    for f in weight_files(folder):
        if f.suffix == ".safetensors":
            from safetensors.torch import load_file

            part = load_file(f)
        else:
            part = torch.load(f, map_location="cpu", weights_only=True, mmap=True)
        if dtype is not None:
            part = {k: v.to(dtype) if v.is_floating_point() else v for k, v in part.items()}
        if state.keys() & part.keys():
            raise bunny.ConversionError(f"{f.name} repeats weights of another file: "
                                        f"{sorted(state.keys() & part.keys())[:3]}")
        state.update(part)
    return state


def load(name_or_path: str | Path, dtype=torch.float32, trust_remote_code: bool = False):
    """Load a checkpoint and its processor: `(model.eval(), processor)`, the model a stock
    `LlavaForConditionalGeneration` (or `LlavaNextForConditionalGeneration`).

    name_or_path: a local folder, or a hub id (downloaded unless offline). Offline (`HF_HUB_OFFLINE=1`, as the
    command line and tests set it), a name that is not a local folder fails at once with a message naming the
    switch; a path that looks local but does not exist fails naming it.
    trust_remote_code: required for checkpoints that ship their own code (`auto_map`, or a model_type
    transformers does not know); refused otherwise. Bunny (`bunny-phi`) is converted by `bunny.to_llava`
    without running its code; other remote-code checkpoints are loaded by transformers with their code and
    must still produce one of `SUPPORTED_ARCHITECTURES`.
    """
    name = str(name_or_path)
    where = _local_or_hub(name)
    folder = where if isinstance(where, Path) else _download(where, trust_remote_code)
    config = _read_json(folder / "config.json")
    kind = check_trust(name, config, trust_remote_code)
    decoder_layers(config)
    for other in PROCESSOR_FILES:  # transformers falls back to defaults for some of these when they do not parse
        if (folder / other).exists():
            _read_json(folder / other)
    check_weights(folder)
    if kind == "bunny":
        return load_bunny(folder, config, dtype)

    from transformers import AutoModelForImageTextToText, AutoProcessor

    safetensors = weight_files(folder)[0].suffix == ".safetensors"
    remote = kind == "remote"
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its load report would repeat, as a table, what check_loading_info says
    try:  # mismatched shapes are loaded as "reinitialised" and then refused by check_loading_info, by name
        model, info = AutoModelForImageTextToText.from_pretrained(
            str(folder), dtype=dtype, use_safetensors=safetensors, trust_remote_code=remote, output_loading_info=True,
            ignore_mismatched_sizes=True)
    except (KeyError, TypeError, AttributeError, RuntimeError) as e:  # a config that does not build
        raise ValueError(f"{folder}: config.json and the weights do not make a model ({type(e).__name__}: "
                         f"{str(e).strip().splitlines()[0][:300] if str(e).strip() else ''})") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    check_loading_info(folder, info)
    if type(model).__name__ not in SUPPORTED_ARCHITECTURES:
        raise ValueError(f"{name!r} loaded as {type(model).__name__}; studylib handles "
                         f"{', '.join(SUPPORTED_ARCHITECTURES)}")
    try:
        processor = AutoProcessor.from_pretrained(str(folder), trust_remote_code=remote)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{folder}: the processor (tokenizer and image processor files) does not load "
                         f"({type(e).__name__}: {str(e).strip()[:300]})") from None
    return model.eval(), processor


def check_loading_info(folder: Path, info: dict) -> None:
    """Refuse a checkpoint whose weights do not match its config: transformers would initialise missing
    weights at random and drop unexpected ones, and the model would still run."""
    problems = [f"{len(info[k])} {what} ({', '.join(sorted(str(x[0] if isinstance(x, tuple) else x) for x in info[k])[:4])}"
                f"{', ...' if len(info[k]) > 4 else ''})"
                for k, what in (("missing_keys", "weights missing"), ("unexpected_keys", "unexpected weights"),
                                ("mismatched_keys", "weights of the wrong shape")) if info.get(k)]
    if problems:
        raise ValueError(f"{folder}: the weights do not match config.json: {'; '.join(problems)}. The checkpoint is "
                         "damaged or its config was edited; re-save or re-download it")


def load_bunny(folder: Path, config: dict | None = None, dtype=torch.float32):
    """A Bunny checkpoint folder -> (LlavaForConditionalGeneration, LlavaProcessor), reading the weights by name
    (safetensors, or .bin with weights_only) and the tokenizer with stock classes: Bunny's code is never run."""
    from transformers import AutoTokenizer

    folder = Path(folder)
    config = config if config is not None else _read_json(folder / "config.json")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)
    except (OSError, ValueError) as e:
        raise bunny.ConversionError(f"cannot load the tokenizer of {str(folder)!r} with stock classes: {e}") from None
    return bunny.to_llava(read_state_dict(folder, dtype), config, tokenizer, dtype=dtype)
