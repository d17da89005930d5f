"""Structural pruning of the language model (LM) inside a multimodal LLM, as in the study.

Two paradigms, both on the LM decoder only (vision tower and projector are never touched):

- layerwise: delete whole decoder blocks (ShortGPT Block Influence and friends);
- widthwise: delete attention heads and MLP neurons inside blocks (LLM-Pruner block-wise mode and
  friends); the hidden size and the embeddings stay.

The workflow is three pure steps, so that one importance computation serves every ratio:

    scores = compute_scores(model, "widthwise", "taylor", calib_batches)   # one pass over the data
    plan = make_plan(model, scores, ratio=0.30)                            # cheap, per ratio
    pruned = apply_plan(copy.deepcopy(model), plan)                        # cheap, per ratio
    save_pruned(pruned, plan, scores, "out/width30")

`prune(...)` does the three at once. The compression ratio is the fraction of LM parameters removed
(LM = decoder blocks + embeddings + final norm + lm_head, tied weights counted once).

Saving. A pruned checkpoint is a plain Hugging Face checkpoint (`save_pretrained`, safetensors):
- layerwise: stock classes; we rebuild the layer list, renumber `layer_idx` and update
  `num_hidden_layers`, `layer_types` and every other per-layer list of the text config;
- widthwise with the same widths in every layer: stock classes, with `num_attention_heads`,
  `num_key_value_heads`, `intermediate_size` and an explicit `head_dim` rewritten;
- widthwise with per-layer widths (the study's default skips the first and last layers) or with a head
  count the stock config refuses (Llama, Gemma2, Gemma3 want hidden_size % heads == 0): the text config
  becomes the registered subclass from `studylib.pruned_modeling` (model_type `pruned_<family>`),
  which reloads with `AutoModelForImageTextToText` / `AutoModelForCausalLM` after
  `import studylib.pruned_modeling`.

The criteria are a registry. Each importance criterion is one function, written out by hand below because
it is the method being studied, registered with `@layer_criterion(name, needs=..., samples=...)` or
`@width_criterion(...)`, its formula in its docstring; `criteria(paradigm)` lists them, and the command line,
the notebooks and the errors read that list (docs/extending.md adds one). The decoder families are the
registry `pruned_modeling.FAMILIES`. Hooks, autograd and transformers do the rest.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
import math
import numbers
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

# importing pruned_modeling registers the Pruned* classes with the Auto classes
from .pruned_modeling import FAMILIES, LAYER_FIELDS, PRUNED_CLASSES, base_family, is_pruned_config, layer_config
from .validate import PARADIGMS, did_you_mean

REDUCTIONS = ("sum", "mean", "max")
TOKENS = ("all", "image", "text")
MLLM_CLASSES = ("LlavaForConditionalGeneration", "LlavaNextForConditionalGeneration")

# ----------------------------------------------------------------------------------------------
# Adapter: find the language model and describe its blocks


@dataclass
class BlockInfo:
    """One decoder block: its modules, its projections by role and its current widths."""

    layer: nn.Module
    attn: nn.Module
    mlp: nn.Module
    proj: dict[str, nn.Linear]  # role ('q','k','v','qkv','o','gate','up','gate_up','down') -> Linear
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int


@dataclass
class LMInfo:
    """The language model inside a (multimodal) model."""

    family: str  # stock decoder family, e.g. 'llama' (also for a 'pruned_llama' config)
    text_config: object  # the decoder config (config.text_config for LLaVA, config for a causal LM)
    decoder: nn.Module  # embeddings + layers + final norm
    lm_head: nn.Module
    blocks: list[BlockInfo]
    image_token_id: int | None  # None for a text-only causal LM

    @property
    def layers(self) -> nn.ModuleList:
        return self.decoder.layers


def _unsupported(what: str) -> ValueError:
    return ValueError(
        f"unsupported {what}. Supported: {', '.join(MLLM_CLASSES)} and causal LMs (e.g. LlamaForCausalLM) "
        f"whose decoder family is one of {', '.join(FAMILIES)}"
    )


def describe_lm(model: nn.Module) -> LMInfo:
    """Find the decoder inside `model` and describe every block (cheap: call it again after pruning)."""
    inner = getattr(model, "model", None)
    if type(model).__name__ in MLLM_CLASSES and hasattr(inner, "language_model"):
        decoder, image_token_id = inner.language_model, model.config.image_token_id
    elif hasattr(inner, "layers") and hasattr(model, "lm_head"):
        decoder, image_token_id = inner, None
    else:
        raise _unsupported(f"architecture {type(model).__name__}")
    family = base_family(decoder.config.model_type)
    if family not in FAMILIES:
        raise _unsupported(f"decoder family {decoder.config.model_type!r}")
    attn_names, mlp_names = FAMILIES[family].attention, FAMILIES[family].mlp

    blocks = []
    for layer in decoder.layers:
        attn, mlp = layer.self_attn, layer.mlp
        proj = {role: getattr(attn, name) for role, name in attn_names.items()}
        proj |= {role: getattr(mlp, name) for role, name in mlp_names.items()}
        head_dim = attn.head_dim
        num_heads = proj["o"].in_features // head_dim
        if "qkv" in proj:
            num_kv_heads = (proj["qkv"].out_features - num_heads * head_dim) // (2 * head_dim)
        else:
            num_kv_heads = proj["k"].out_features // head_dim
        intermediate = proj["down"].in_features
        blocks.append(BlockInfo(layer, attn, mlp, proj, num_heads, num_kv_heads, head_dim, intermediate))
    return LMInfo(family, decoder.config, decoder, model.lm_head, blocks, image_token_id)


def count_params(model: nn.Module) -> tuple[int, int]:
    """(LM parameters, whole-model parameters); a tied embedding / lm_head is counted once."""
    info = describe_lm(model)
    lm = {id(p): p.numel() for module in (info.decoder, info.lm_head) for p in module.parameters()}
    return sum(lm.values()), sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------------------------
# Checks of user input


def _check_choice(name: str, value, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")


def _check_ratio(ratio) -> None:
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 <= ratio < 1:
        raise ValueError(f"ratio must be a number in [0, 1) (fraction of LM parameters removed); got {ratio!r}")


def _check_layers(layers, num_layers: int, default: range) -> list[int]:
    """The candidate layers as a sorted list; every index must be a block of the model."""
    chosen = sorted(set(default if layers is None else layers))
    bad = [i for i in chosen if not isinstance(i, numbers.Integral) or not 0 <= i < num_layers]
    if bad:
        raise ValueError(f"layers must be decoder block indices in [0, {num_layers}); got {bad}")
    if not chosen:
        raise ValueError(f"layers selects no decoder block (the model has {num_layers})")
    return chosen


# ----------------------------------------------------------------------------------------------
# The criteria registry: one function per criterion, registered with what it needs

NEEDS = ("nothing", "forward", "gradients")  # weights or positions only / forward passes / a backward pass too


@dataclass(frozen=True)
class Criterion:
    """A registered importance criterion. `score` is the function, its docstring states the formula;
    needs: 'nothing' (weights or block positions only), 'forward' (forward passes over calibration data) or
    'gradients' (a backward pass too); default_samples: the calibration samples drawn when none are asked
    (nominal when needs is 'nothing')."""

    name: str
    paradigm: str
    score: Callable = field(repr=False)
    needs: str
    default_samples: int

    @property
    def formula(self) -> str:
        """The first paragraph of the docstring, on one line."""
        return " ".join(inspect.getdoc(self.score).split("\n\n")[0].split())


CRITERIA: dict[str, dict[str, Criterion]] = {paradigm: {} for paradigm in PARADIGMS}  # in registration order


def _registrar(paradigm: str, name: str, needs: str, samples: int, replace: bool):
    if not isinstance(name, str) or not name or any(ch in name for ch in " ,;="):
        raise ValueError(f"criterion name must be a non-empty string without spaces or ,;=; got {name!r}")
    _check_choice("needs", needs, NEEDS)
    _check_count("samples", samples, 1)
    if name in CRITERIA[paradigm] and not replace:
        raise ValueError(f"{paradigm} criterion {name!r} is already registered; pass replace=True to replace it")

    def register(score: Callable) -> Callable:
        if not (inspect.getdoc(score) or "").strip():
            raise ValueError(f"{paradigm} criterion {name!r}: its function needs a docstring stating the formula")
        CRITERIA[paradigm][name] = Criterion(name, paradigm, score, needs, samples)
        return score

    return register


def layer_criterion(name: str, *, needs: str, samples: int = 50, replace: bool = False):
    """Decorator: register `score(model, info, batches, tokens, seed)` as the layerwise criterion `name`.
    It returns one score per decoder block of `info` (higher = keep), or (scores, runs) where runs[n][l]
    scores removing the n contiguous blocks from l (lower = removed first; the plan then removes one run)."""
    return _registrar("layerwise", name, needs, samples, replace)


def width_criterion(name: str, *, needs: str, samples: int = 50, replace: bool = False):
    """Decorator: register `score(model, info, batches, reduction, seed)` as the widthwise criterion `name`.
    It returns, per decoder block of `info`, the scores of its (query heads, key/value groups, neurons)
    (higher = keep); `weight_scores` groups element scores of the weights that way."""
    return _registrar("widthwise", name, needs, samples, replace)


def unregister_criterion(paradigm: str, name: str) -> Criterion:
    """Remove a registered criterion (e.g. one a test or a notebook added) and return it."""
    get_criterion(paradigm, name)
    return CRITERIA[paradigm].pop(name)


def criteria(paradigm: str) -> list[str]:
    """The names of the criteria registered for `paradigm`, in registration order."""
    _check_choice("paradigm", paradigm, PARADIGMS)
    return list(CRITERIA[paradigm])


def get_criterion(paradigm: str, name: str) -> Criterion:
    """The registered criterion; an unknown name is an error listing the registered ones."""
    _check_choice("paradigm", paradigm, PARADIGMS)
    registered = CRITERIA[paradigm]
    if name not in registered:
        other = [p for p in PARADIGMS if name in CRITERIA[p]]
        hint = f" (a {other[0]} criterion)" if other else did_you_mean(name, registered)
        raise ValueError(f"criterion for {paradigm} pruning must be one of {', '.join(registered)}; got {name!r}{hint}")
    return registered[name]


def _find_criterion(name: str, paradigm: str | None) -> Criterion:
    """By name in either paradigm (the same name must then declare the same needs in both)."""
    if paradigm is not None:
        return get_criterion(paradigm, name)
    found = [CRITERIA[p][name] for p in PARADIGMS if name in CRITERIA[p]]
    if not found:
        listed = "; ".join(f"{p}: {', '.join(CRITERIA[p])}" for p in PARADIGMS)
        every = [n for p in PARADIGMS for n in CRITERIA[p]]
        raise ValueError(f"unknown criterion {name!r}{did_you_mean(name, every)}; registered: {listed}")
    if len({(c.needs, c.default_samples) for c in found}) > 1:
        raise ValueError(f"criterion {name!r} declares different needs per paradigm; pass paradigm=")
    return found[0]


def default_calib_samples(criterion: str, paradigm: str | None = None) -> int:
    """The calibration samples the criterion declares (the study: 10 for the Taylor criteria, as LLM-Pruner,
    50 for the others, as ShortGPT's Block Influence)."""
    return _find_criterion(criterion, paradigm).default_samples


def needs_calibration(criterion: str, paradigm: str | None = None) -> bool:
    """False for criteria that never look at data (needs='nothing': deepest, random, l1, l2)."""
    return _find_criterion(criterion, paradigm).needs != "nothing"


def _check_batches(c: Criterion, batches: list) -> None:
    if c.needs != "nothing" and not batches:
        raise ValueError(f"criterion {c.name!r} needs calibration batches; got none")


@contextmanager
def _evaluating(model: nn.Module):
    """model.eval() inside the block, the model's own mode after it."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


# ----------------------------------------------------------------------------------------------
# Calibration data


def calibration_fingerprint(batches: list[dict]) -> str:
    """sha256 of every tensor (name, dtype, shape, bytes) of every calibration batch, in order."""
    h = hashlib.sha256()
    for batch in batches:
        for key in sorted(batch):
            value = batch[key]
            h.update(key.encode())
            if torch.is_tensor(value):
                t = value.detach().cpu().contiguous()
                h.update(f"{t.dtype}{tuple(t.shape)}".encode())
                h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
            else:
                h.update(repr(value).encode())
    return h.hexdigest()[:16]


DEFAULT_N_TRAIN = 20000  # size of the instruction mix the teacher is trained on (TeacherConfig.n_train)


def _check_count(name: str, value, minimum: int = 1, maximum: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum or (
        maximum is not None and value > maximum
    ):
        upper = "" if maximum is None else f" and at most {maximum}"
        raise ValueError(f"{name} must be an int of at least {minimum}{upper}; got {value!r}")


def calibration_batches(
    processor,
    n: int,
    seed: int = 0,
    batch_size: int = 10,
    cache_dir=None,
    *,
    n_train: int = DEFAULT_N_TRAIN,
    max_length: int | None = None,
    data=None,
) -> list[dict]:
    """`n` calibration samples from the instruction data, as model-input batches.

    The samples are drawn uniformly at random without replacement (seeded by `seed`) from
    `data.build_dataset("train", n_train, seed)`, i.e. the teacher's own training mix, as the study draws
    random training samples. Each batch is a dict with input_ids, attention_mask, labels (-100 on the
    prompt, image and pad tokens: the loss is the answer-token loss) and pixel_values (when the batch has
    images). Deterministic in (n, seed, n_train, batch_size). max_length: the token limit of
    `collate.tokenize_dataset` (None: its default, the one the teacher was trained with). `data`: a LLaVA-format
    Dataset to draw from instead (a real model's instruction data, e.g. `llava_json.load`).
    """
    import numpy as np

    from . import collate as C
    from . import data as D

    if data is None:
        _check_count("n_train", n_train, 1)
    _check_count("n (calibration samples)", n, 1, n_train if data is None else len(data))
    _check_count("batch_size", batch_size, 1)
    ds = D.build_dataset("train", n_train, seed, cache_dir) if data is None else data
    picked = np.random.default_rng([seed, 7919]).choice(len(ds), size=n, replace=False)
    subset = ds.select(sorted(int(i) for i in picked))
    limit = {} if max_length is None else {"max_length": max_length}
    tokenized = C.tokenize_dataset(subset, processor, **limit)
    collate = C.Collator(processor)
    rows = [tokenized[i] for i in range(len(tokenized))]
    return [collate(rows[start : start + batch_size]) for start in range(0, n, batch_size)]


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _to(batch: dict, device) -> dict:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def _with_labels(batch: dict, image_token_id: int | None) -> dict:
    """Add LM labels if missing: next-token targets on text tokens; pad and image tokens are -100."""
    if "labels" in batch:
        return batch
    labels = batch["input_ids"].clone()
    if "attention_mask" in batch:
        labels[batch["attention_mask"] == 0] = -100
    if image_token_id is not None:
        labels[batch["input_ids"] == image_token_id] = -100
    return {**batch, "labels": labels}


def _token_mask(batch: dict, tokens: str, image_token_id: int | None) -> torch.Tensor:
    """(batch, seq) bool mask of the tokens to score: non-pad, then all / image / text tokens."""
    ids = batch["input_ids"]
    mask = batch["attention_mask"].bool() if "attention_mask" in batch else torch.ones_like(ids, dtype=torch.bool)
    if tokens != "all":
        if image_token_id is None:
            raise ValueError(f"tokens={tokens!r} needs a multimodal model with image tokens; use tokens='all'")
        is_image = ids == image_token_id
        mask = mask & (is_image if tokens == "image" else ~is_image)
    return mask


def _hidden_in(args, kwargs) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def hidden_out(output) -> torch.Tensor:
    """A decoder block's output hidden states (blocks return a tensor or a tuple whose first item it is)."""
    return output[0] if isinstance(output, tuple) else output


class _Hooks:
    """Context manager that removes the hooks it was given."""

    def __init__(self, handles):
        self.handles = handles

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()


# ----------------------------------------------------------------------------------------------
# Layerwise importance


@dataclass
class LayerScores:
    """Importance of each decoder block; higher = more important (removed last). The formulas are the
    docstrings of the registered criteria (`CRITERIA["layerwise"]`). angular: for the `angular` criterion,
    `angular[n][l]` scores removing the run of n blocks starting at l (the plan removes the lowest run)."""

    criterion: str
    scores: list[float]
    calibration_fingerprint: str
    tokens: str = "all"
    angular: dict[int, list[float]] | None = None
    paradigm: str = "layerwise"


def _layer_pass(model, info: LMInfo, batches, tokens: str):
    """One forward pass with hooks on every block: BI sums and the hidden state of the last token at
    every block boundary (input of block l, and output of the last block, before the final norm)."""
    num = len(info.blocks)
    bi_sum, bi_count = torch.zeros(num, dtype=torch.float64), torch.zeros(num, dtype=torch.float64)
    inputs: dict[int, torch.Tensor] = {}
    last_states = []  # per batch: (batch, num + 1, hidden) at the last non-pad token
    current = {}

    def pre_hook(i):
        def hook(module, args, kwargs):
            inputs[i] = _hidden_in(args, kwargs)

        return hook

    def post_hook(i):
        def hook(module, args, kwargs, output):
            x_in, x_out = inputs[i].float(), hidden_out(output).float()
            bi = 1 - F.cosine_similarity(x_in, x_out, dim=-1)  # BI = 1 - cos(x_in, x_out), per token
            mask = current["mask"]
            bi_sum[i] += bi[mask].sum().double().cpu()
            bi_count[i] += mask.sum().cpu()
            current["boundaries"][i] = x_in[current["rows"], current["last"]]
            if i == num - 1:
                current["boundaries"][num] = x_out[current["rows"], current["last"]]

        return hook

    handles = []
    for i, b in enumerate(info.blocks):
        handles.append(b.layer.register_forward_pre_hook(pre_hook(i), with_kwargs=True))
        handles.append(b.layer.register_forward_hook(post_hook(i), with_kwargs=True))
    device = _device(model)
    with _Hooks(handles), torch.no_grad():
        for batch in batches:
            batch = _to(batch, device)
            ids = batch["input_ids"]
            pad_mask = batch.get("attention_mask", torch.ones_like(ids)).bool()
            positions = torch.arange(ids.shape[1], device=ids.device)
            current.update(
                mask=_token_mask(batch, tokens, info.image_token_id),
                rows=torch.arange(ids.shape[0], device=ids.device),
                last=(pad_mask * positions).argmax(dim=1),  # last non-pad position (left or right padding)
                boundaries={},
            )
            model(**batch, use_cache=False)
            last_states.append(torch.stack([current["boundaries"][k] for k in range(num + 1)], dim=1).cpu())
    bi = (bi_sum / bi_count.clamp(min=1)).tolist()
    return bi, torch.cat(last_states)


def _angular_distances(states: torch.Tensor) -> dict[int, list[float]]:
    """angular[n][l] = mean over samples of arccos(cos(x_l, x_{l+n})) / pi (Gromov et al.)."""
    num = states.shape[1] - 1
    out = {}
    for n in range(1, num):
        cos = F.cosine_similarity(states[:, : num + 1 - n], states[:, n:], dim=-1).clamp(-1, 1)
        out[n] = (torch.arccos(cos) / math.pi).mean(dim=0).tolist()
    return out


def boundary_states(model, info: LMInfo, batches) -> torch.Tensor:
    """(samples, blocks + 1, hidden): the hidden state at the last non-pad token of every sample at every
    block boundary (the input of block l; the last entry is the output of the last block)."""
    return _layer_pass(model, info, batches, "all")[1]


def _mean_loss(model, batches, image_token_id) -> float:
    device = _device(model)
    with torch.no_grad():
        losses = [model(**_to(_with_labels(b, image_token_id), device), use_cache=False).loss for b in batches]
    return torch.stack(losses).mean().item()


@layer_criterion("bi", needs="forward")
def layer_bi(model, info: LMInfo, batches, tokens: str, seed: int) -> list[float]:
    """Block Influence (ShortGPT): BI_i = 1 - E_t cos(x_i,t, x_i+1,t), x_i,t the input of block i at token t,
    over the scored tokens t (tokens: all, image or text; pad tokens never)."""
    return _layer_pass(model, info, batches, tokens)[0]


@layer_criterion("angular", needs="forward")
def layer_angular(model, info: LMInfo, batches, tokens: str, seed: int):
    """Angular distance (Gromov et al.): d(l, n) = E_s arccos(cos(x_l, x_l+n)) / pi at the last token of each
    sample s; block i scores d(i, 1), and the plan removes the run of n blocks with the smallest d(l, n)."""
    runs = _angular_distances(_layer_pass(model, info, batches, tokens)[1])
    return runs.get(1, [0.0] * len(info.blocks)), runs


@layer_criterion("loss", needs="forward")
def layer_loss(model, info: LMInfo, batches, tokens: str, seed: int) -> list[float]:
    """Loss increase: S_i = L(model with block i skipped) - L(model), L the mean LM loss over the batches
    (block i skipped: its output replaced by its input)."""

    def skip(module, args, kwargs, output):
        hidden = _hidden_in(args, kwargs)
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    base = _mean_loss(model, batches, info.image_token_id)
    scores = []
    for b in info.blocks:
        with _Hooks([b.layer.register_forward_hook(skip, with_kwargs=True)]):
            scores.append(_mean_loss(model, batches, info.image_token_id) - base)
    return scores


@layer_criterion("deepest", needs="nothing")
def layer_deepest(model, info: LMInfo, batches, tokens: str, seed: int) -> list[float]:
    """Deepest first: S_i = L - 1 - i for i < L - 1 and S_(L-1) = L (L blocks; the last block is kept)."""
    num = len(info.blocks)
    return [float(num - 1 - i) for i in range(num - 1)] + [float(num)]


@layer_criterion("random", needs="nothing")
def layer_random(model, info: LMInfo, batches, tokens: str, seed: int) -> list[float]:
    """Random baseline: S_i ~ U(0, 1), seeded by `seed`."""
    return torch.rand(len(info.blocks), generator=torch.Generator().manual_seed(seed)).tolist()


def _run_criterion(paradigm: str, criterion: str, model, batches: list[dict], option: str, seed: int):
    """(the model's LMInfo, the registered criterion's raw scores, the calibration fingerprint), scored in eval
    mode; `option` is the criterion's tokens (layerwise) or reduction (widthwise)."""
    c = get_criterion(paradigm, criterion)
    info = describe_lm(model)
    fingerprint = calibration_fingerprint(batches)
    _check_batches(c, batches)
    with _evaluating(model):
        return info, c.score(model, info, batches, option, seed), fingerprint


def layer_scores(model, criterion: str, batches: list[dict], *, tokens: str = "all", seed: int = 0) -> LayerScores:
    """Score every decoder block once with a registered criterion; reuse the result for every ratio."""
    _check_choice("tokens", tokens, TOKENS)
    info, result, fingerprint = _run_criterion("layerwise", criterion, model, batches, tokens, seed)
    scores, runs = result if isinstance(result, tuple) else (result, None)
    if len(scores) != len(info.blocks):
        raise ValueError(f"criterion {criterion!r} gave {len(scores)} scores for {len(info.blocks)} blocks")
    return LayerScores(criterion, [float(s) for s in scores], fingerprint, tokens, runs)


# ----------------------------------------------------------------------------------------------
# Widthwise importance
#
# Coupled groups. A query head is its head_dim rows of q (and of the q part of a fused qkv) plus its
# head_dim columns of o. A key/value group is its rows of k and v plus all the query heads that share it
# (for plain multi-head attention a group is exactly one head with q, k, v rows and o columns).
# A neuron is its row of gate and up (fc1 for Phi, both halves of gate_up for Phi-3) plus its column of
# down (fc2). Element scores are reduced over the group: sum (default), mean or max.


@dataclass
class WidthScores:
    """Importance of every query head, key/value group and MLP neuron of every block (higher = keep). The
    formulas are the docstrings of the registered criteria (`CRITERIA["widthwise"]`)."""

    criterion: str
    reduction: str
    heads: list[list[float]]  # [layer][query head]
    kv_heads: list[list[float]]  # [layer][key/value group]
    neurons: list[list[float]]  # [layer][neuron]
    calibration_fingerprint: str
    paradigm: str = "widthwise"


def _rows(units: list[int] | torch.Tensor, size: int) -> torch.Tensor:
    """Row indices of whole units of `size` rows: units [0, 2], size 3 -> [0, 1, 2, 6, 7, 8]."""
    units = torch.as_tensor(units, dtype=torch.long)
    return (units[:, None] * size + torch.arange(size)).reshape(-1)


def _grouped(weight: torch.Tensor, bias: torch.Tensor | None, start: int, count: int, size: int) -> torch.Tensor:
    """Rows [start, start + count*size) of weight (and bias) as (count, elements of one unit)."""
    part = weight[start : start + count * size].reshape(count, -1)
    if bias is not None:
        part = torch.cat([part, bias[start : start + count * size].reshape(count, -1)], dim=1)
    return part


Pair = tuple[torch.Tensor, torch.Tensor | None]  # element scores of a Linear's weight and of its bias (or None)
Element = Callable[[int, str, nn.Linear], Pair]  # (block index, role, the Linear) -> its element scores


def _weights(linear: nn.Linear) -> Pair:
    """The weight and bias of a Linear, detached, in float32."""
    b = linear.bias
    return linear.weight.detach().float(), None if b is None else b.detach().float()


def _each(f: Callable[[torch.Tensor], torch.Tensor], pair: Pair) -> Pair:
    w, b = pair
    return f(w), None if b is None else f(b)


def _parts_from_weights(b: BlockInfo, element: Callable[[str], Pair]) -> dict[str, torch.Tensor]:
    """Element scores grouped by unit: q (heads, n), o (heads, n), kv (kv groups, n), mlp (neurons, n)."""
    H, KV, hd, inter = b.num_heads, b.num_kv_heads, b.head_dim, b.intermediate_size
    if "qkv" in b.proj:
        w, bias = element("qkv")
        q = _grouped(w, bias, 0, H, hd)
        kv = torch.cat([_grouped(w, bias, H * hd, KV, hd), _grouped(w, bias, (H + KV) * hd, KV, hd)], dim=1)
    else:
        q = _grouped(*element("q"), 0, H, hd)
        kv = torch.cat([_grouped(*element("k"), 0, KV, hd), _grouped(*element("v"), 0, KV, hd)], dim=1)
    o = _grouped(element("o")[0].t(), None, 0, H, hd)  # columns of o; its bias is shared by all heads
    if "gate_up" in b.proj:
        w, bias = element("gate_up")
        mlp_in = [_grouped(w, bias, 0, inter, 1), _grouped(w, bias, inter, inter, 1)]
    else:
        mlp_in = [_grouped(*element(role), 0, inter, 1) for role in ("gate", "up") if role in b.proj]
    mlp = torch.cat(mlp_in + [_grouped(element("down")[0].t(), None, 0, inter, 1)], dim=1)
    return {"q": q, "o": o, "kv": kv, "mlp": mlp}


def _parts_from_activations(b: BlockInfo, stats: dict) -> dict[str, torch.Tensor]:
    """Activation criterion: mean |a| of each channel entering o (head outputs) and down (neurons)."""
    o_act = stats["o"]["abs_sum"] / stats["o"]["tokens"]
    down_act = stats["down"]["abs_sum"] / stats["down"]["tokens"]
    return {
        "q": torch.zeros(b.num_heads, 0),
        "o": o_act.reshape(b.num_heads, b.head_dim),
        "kv": torch.zeros(b.num_kv_heads, 0),
        "mlp": down_act.reshape(b.intermediate_size, 1),
    }


Reduce = Callable[[torch.Tensor], torch.Tensor]  # (groups, elements) -> (groups,)
_REDUCE: dict[str, Reduce] = {
    "sum": lambda e: e.sum(dim=1),
    "mean": lambda e: e.mean(dim=1),
    "max": lambda e: e.amax(dim=1),
}


def _group_scores(b: BlockInfo, parts: dict, reduce: Reduce):
    """Scores of query heads, key/value groups and neurons of one block."""
    H, KV = b.num_heads, b.num_kv_heads
    q, o, kv = parts["q"], parts["o"], parts["kv"]
    head_parts = [q, o] + ([kv] if H == KV else [])  # multi-head attention: a head owns its k, v rows
    heads = reduce(torch.cat(head_parts, dim=1))
    groups = reduce(torch.cat([kv, q.reshape(KV, -1), o.reshape(KV, -1)], dim=1))
    neurons = reduce(parts["mlp"])
    return heads, groups, neurons


def weight_scores(info: LMInfo, element: Element, reduction: str | Reduce) -> list[tuple]:
    """Per block, the (query head, key/value group, neuron) scores from element scores of the weights:
    element(block index, role, Linear) -> (weight scores, bias scores or None), reduced over each coupled
    group by `reduction` ('sum', 'mean', 'max' or a function (groups, elements) -> (groups,))."""
    reduce = _REDUCE[reduction] if isinstance(reduction, str) else reduction
    return [
        _group_scores(b, _parts_from_weights(b, lambda role: element(i, role, b.proj[role])), reduce)
        for i, b in enumerate(info.blocks)
    ]


def _input_stats_pass(model, info: LMInfo, batches, roles: tuple[str, ...]) -> list[dict]:
    """Forward pass with a hook on the input of the given projections of every block.
    Collects per input channel sum |x|, sum x^2 and the token count (pad tokens excluded)."""
    stats = [{role: {"abs_sum": 0.0, "sq_sum": 0.0, "tokens": 0} for role in roles} for _ in info.blocks]
    current = {}

    def hook(i, role):
        def fn(module, args):
            x = args[0]
            mask = current["mask"]
            x = x[mask] if mask.shape == x.shape[:2] else x.reshape(-1, x.shape[-1])
            x = x.detach().float()
            s = stats[i][role]
            s["abs_sum"] = s["abs_sum"] + x.abs().sum(0).cpu()
            s["sq_sum"] = s["sq_sum"] + x.pow(2).sum(0).cpu()
            s["tokens"] += x.shape[0]

        return fn

    handles = [
        b.proj[role].register_forward_pre_hook(hook(i, role)) for i, b in enumerate(info.blocks) for role in roles
    ]
    device = _device(model)
    with _Hooks(handles), torch.no_grad():
        for batch in batches:
            batch = _to(batch, device)
            current["mask"] = _token_mask(batch, "all", info.image_token_id)
            model(**batch, use_cache=False)
    return stats


@contextmanager
def _gradients(model, info: LMInfo, batches):
    """Forward + backward of the LM loss on every batch; inside the block, the gradients of the block
    projections are in .grad (only those parameters require grad during the pass); cleared after."""
    params = [p for b in info.blocks for lin in b.proj.values() for p in lin.parameters()]
    wanted = {id(p) for p in params}
    saved = {p: p.requires_grad for p in model.parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in wanted)
        p.grad = None
    device = _device(model)
    try:
        try:
            for batch in batches:
                model(**_to(_with_labels(batch, info.image_token_id), device), use_cache=False).loss.backward()
        finally:
            for p, flag in saved.items():
                p.requires_grad_(flag)
        yield
    finally:
        for p in params:
            p.grad = None


def _taylor_terms(i: int, role: str, linear: nn.Linear) -> Pair:
    """The first-order Taylor terms w * dL/dw of a Linear's weight and bias."""
    w, b = _weights(linear)
    return w * linear.weight.grad.float(), None if b is None else b * linear.bias.grad.float()


@width_criterion("taylor", needs="gradients", samples=10)
def width_taylor(model, info: LMInfo, batches, reduction: str, seed: int) -> list[tuple]:
    """Element-wise first-order Taylor (LLM-Pruner param_first): S_g = R_{w in g} |w * dL/dw|, R the
    reduction (sum, mean or max) over the weights and biases of the coupled group g."""
    with _gradients(model, info, batches):
        return weight_scores(info, lambda i, role, lin: _each(torch.abs, _taylor_terms(i, role, lin)), reduction)


@width_criterion("taylor-vector", needs="gradients", samples=10)
def width_taylor_vector(model, info: LMInfo, batches, reduction: str, seed: int) -> list[tuple]:
    """Vector-wise first-order Taylor (LLM-Pruner): S_g = |sum_{w in g} w * dL/dw| (the reduction is the sum)."""
    with _gradients(model, info, batches):
        return weight_scores(info, _taylor_terms, lambda e: e.sum(dim=1).abs())


@width_criterion("l1", needs="nothing")
def width_l1(model, info: LMInfo, batches, reduction: str, seed: int) -> list[tuple]:
    """Magnitude: S_g = R_{w in g} |w| over the weights and biases of the group."""
    return weight_scores(info, lambda i, role, lin: _each(torch.abs, _weights(lin)), reduction)


@width_criterion("l2", needs="nothing")
def width_l2(model, info: LMInfo, batches, reduction: str, seed: int) -> list[tuple]:
    """Squared magnitude: S_g = R_{w in g} w^2 over the weights and biases of the group."""
    return weight_scores(info, lambda i, role, lin: _each(lambda t: t.pow(2), _weights(lin)), reduction)


@width_criterion("activation", needs="forward")
def width_activation(model, info: LMInfo, batches, reduction: str, seed: int) -> list[tuple]:
    """Activation (Minitron): S_g = R_{c in g} E_t |a_c,t|, a the channels entering o (head outputs) and down
    (neuron activations), over every non-pad token t."""
    stats = _input_stats_pass(model, info, batches, ("o", "down"))
    reduce = _REDUCE[reduction]
    return [_group_scores(b, _parts_from_activations(b, stats[i]), reduce) for i, b in enumerate(info.blocks)]


@width_criterion("wanda", needs="forward")
def width_wanda(model, info: LMInfo, batches, reduction: str, seed: int) -> list[tuple]:
    """Wanda: S_g = R_{w_jk in g} |w_jk| * ||x_k||_2, x_k the input channel k of w's Linear over every non-pad
    calibration token (biases ignored)."""
    stats = _input_stats_pass(model, info, batches, tuple(info.blocks[0].proj))
    norms = [{role: s["sq_sum"].sqrt() for role, s in block.items()} for block in stats]
    return weight_scores(info, lambda i, role, lin: (_weights(lin)[0].abs() * norms[i][role][None, :], None), reduction)


@width_criterion("random", needs="nothing")
def width_random(model, info: LMInfo, batches, reduction: str, seed: int) -> list[tuple]:
    """Random baseline: S_g ~ U(0, 1) for every query head, key/value group and neuron g, seeded by `seed`."""
    generator = torch.Generator().manual_seed(seed)
    sizes = [(b.num_heads, b.num_kv_heads, b.intermediate_size) for b in info.blocks]
    return [tuple(torch.rand(n, generator=generator) for n in block) for block in sizes]


def width_scores(
    model, criterion: str, batches: list[dict], *, reduction: str = "sum", seed: int = 0
) -> WidthScores:
    """Score every query head, key/value group and neuron of every block with a registered criterion, from one
    pass over the data."""
    _check_choice("reduction", reduction, REDUCTIONS)
    info, per_block, fingerprint = _run_criterion("widthwise", criterion, model, batches, reduction, seed)
    values = [[[float(x) for x in s] for s in scores] for scores in per_block]
    sizes = [(b.num_heads, b.num_kv_heads, b.intermediate_size) for b in info.blocks]
    if [tuple(map(len, v)) for v in values] != sizes:
        raise ValueError(f"criterion {criterion!r} must give per block the scores of its (query heads, key/value "
                         f"groups, neurons), {sizes}; got {[tuple(map(len, v)) for v in values]}")
    heads, kv_heads, neurons = ([v[k] for v in values] for k in range(3))
    return WidthScores(criterion, reduction, heads, kv_heads, neurons, fingerprint)


def compute_scores(
    model,
    paradigm: str,
    criterion: str,
    calib_batches: Iterable[dict] | None,
    *,
    reduction: str = "sum",
    tokens: str = "all",
    seed: int = 0,
) -> LayerScores | WidthScores:
    """Importance for every block (layerwise) or every head and neuron (widthwise), computed once.

    calib_batches: model input dicts (input_ids, attention_mask, pixel_values, optional labels with -100
    on ignored positions). Without labels, the loss-based criteria predict every non-pad text token.
    """
    get_criterion(paradigm, criterion)
    batches = list(calib_batches or [])
    if paradigm == "layerwise":
        return layer_scores(model, criterion, batches, tokens=tokens, seed=seed)
    return width_scores(model, criterion, batches, reduction=reduction, seed=seed)


# ----------------------------------------------------------------------------------------------
# Plans


@dataclass
class PruningPlan:
    """What to remove, as plain JSON-able data. `apply_plan(original_model, plan)` reproduces the model."""

    paradigm: str
    criterion: str
    requested_ratio: float | None  # None when n_layers / widths were given explicitly
    lm_ratio: float  # achieved fraction of LM parameters removed
    model_ratio: float  # achieved fraction of all parameters removed
    lm_params_before: int
    lm_params_after: int
    model_params_before: int
    model_params_after: int
    num_layers: int  # decoder blocks before pruning
    widths_before: list[list[int]]  # per block: [query heads, key/value heads, neurons]
    layers: list[int]  # the blocks that could be pruned
    calibration_fingerprint: str
    kept_layers: list[int] | None = None  # layerwise
    kept_heads: list[list[int] | None] | None = None  # widthwise, per block (None: block untouched)
    kept_kv_heads: list[list[int] | None] | None = None
    kept_neurons: list[list[int] | None] | None = None
    round_to: int = 1
    global_ranking: bool = False
    reduction: str | None = None
    tokens: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "PruningPlan":
        return cls(**data)

    def save(self, path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path) -> "PruningPlan":
        """Read pruning_plan.json; a damaged or foreign file is a ValueError naming it."""
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"{path} is not a pruning plan written by studylib ({type(e).__name__}: {e}); "
                             "prune the model again") from None


def _widths(info: LMInfo) -> list[list[int]]:
    return [[b.num_heads, b.num_kv_heads, b.intermediate_size] for b in info.blocks]


def _plan(model, info, scores, ratio, layers, removed_lm: int, **fields) -> PruningPlan:
    lm_before, total_before = count_params(model)
    return PruningPlan(
        paradigm=scores.paradigm,
        criterion=scores.criterion,
        requested_ratio=None if ratio is None else float(ratio),
        lm_ratio=removed_lm / lm_before,
        model_ratio=removed_lm / total_before,
        lm_params_before=lm_before,
        lm_params_after=lm_before - removed_lm,
        model_params_before=total_before,
        model_params_after=total_before - removed_lm,
        num_layers=len(info.blocks),
        widths_before=_widths(info),
        layers=layers,
        calibration_fingerprint=scores.calibration_fingerprint,
        **fields,
    )


def _top(scores: list[float], candidates: list[int], k: int) -> list[int]:
    """The k candidates with the highest score (ties: lower index), sorted by index."""
    return sorted(sorted(candidates, key=lambda i: (-scores[i], i))[:k])


def _plan_layers(model, info: LMInfo, scores: LayerScores, ratio, layers, n_layers) -> PruningPlan:
    num = len(info.blocks)
    candidates = _check_layers(layers, num, range(num))
    block_params = [sum(p.numel() for p in b.layer.parameters()) for b in info.blocks]
    lm_before, _ = count_params(model)
    mean_block = sum(block_params[i] for i in candidates) / len(candidates)
    max_n = min(len(candidates), num - 1)  # at least one block stays
    if n_layers is None:
        n = round(ratio * lm_before / mean_block)  # nearest whole number of blocks
        if n == 0 and ratio > 0:
            raise ValueError(
                f"ratio={ratio} removes no decoder block: one block is {mean_block / lm_before:.3f} of the LM "
                f"parameters and the ratio is rounded to whole blocks, so a ratio above "
                f"{0.5 * mean_block / lm_before:.3f} removes one (or give n_layers=1)")
        if n > max_n:
            raise ValueError(
                f"ratio={ratio} needs {n} blocks but at most {max_n} of layers {candidates} can be removed: "
                f"the maximum achievable ratio is {max_n * mean_block / lm_before:.3f}"
            )
    else:
        n = n_layers
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= max_n:
            raise ValueError(
                f"n_layers must be an int in [0, {max_n}] (the model has {num} decoder blocks, "
                f"{len(candidates)} candidates, one block must stay); got {n_layers!r}"
            )
    if n == 0:
        removed = []
    elif scores.angular is not None:  # angular: the best contiguous run of n blocks inside the candidates
        starts = [s for s in range(num - n + 1) if all(i in candidates for i in range(s, s + n))]
        if not starts:
            raise ValueError(f"no run of {n} contiguous blocks inside layers {candidates}")
        start = min(starts, key=lambda s: (scores.angular[n][s], s))
        removed = list(range(start, start + n))
    else:  # the n least important candidates
        removed = sorted(sorted(candidates, key=lambda i: (scores.scores[i], i))[:n])
    kept = [i for i in range(num) if i not in removed]
    return _plan(
        model, info, scores, ratio, candidates, sum(block_params[i] for i in removed),
        kept_layers=kept, tokens=scores.tokens,
    )


def _unit_params(b: BlockInfo) -> tuple[int, int, int]:
    """Parameters removed with one query head, one key/value head and one neuron of block b."""
    hd = b.head_dim

    def row(lin):  # one output row of a Linear, with its bias
        return lin.in_features + (lin.bias is not None)

    q_lin = b.proj.get("qkv", b.proj.get("q"))
    kv_lin = b.proj.get("qkv", b.proj.get("k"))
    per_q = hd * row(q_lin) + hd * b.proj["o"].out_features
    per_kv = 2 * hd * row(kv_lin)
    mlp_in = [b.proj[r] for r in ("gate", "up", "gate_up") if r in b.proj]
    per_neuron = sum(row(lin) * (2 if lin is b.proj.get("gate_up") else 1) for lin in mlp_in)
    return per_q, per_kv, per_neuron + b.proj["down"].out_features


def head_options(num_heads: int, num_kv: int) -> list[tuple[int, int]]:
    """Valid (query heads, kv heads) to keep: G whole kv groups, each keeping the same g query heads."""
    per_group = num_heads // num_kv
    return [(groups * g, groups) for groups in range(1, num_kv + 1) for g in range(1, per_group + 1)]


def _neuron_options(intermediate: int, round_to: int) -> list[int]:
    """Neuron counts to keep: multiples of round_to, or all of them."""
    return sorted(set(range(round_to, intermediate + 1, round_to)) | {intermediate})


def _removed(b: BlockInfo, q: int, kv: int, m: int) -> int:
    per_q, per_kv, per_n = _unit_params(b)
    return (b.num_heads - q) * per_q + (b.num_kv_heads - kv) * per_kv + (b.intermediate_size - m) * per_n


def _max_ratio_message(ratio, best_ratio, candidates, round_to) -> str:
    return (
        f"ratio={ratio} cannot be reached by widthwise pruning of layers {candidates} with round_to={round_to}: "
        f"the maximum achievable ratio is {best_ratio:.3f} (at least one head and one neuron group stay per layer)"
    )


def _solve_uniform(info, candidates, ratio, lm_before, round_to, tol) -> tuple[int, int, int]:
    """Same (query heads, kv heads, neurons) in every candidate block, reaching `ratio` within `tol`.
    Among the widths within tolerance, prefer attention and MLP kept in similar proportions."""
    b = info.blocks[candidates[0]]
    if any(_widths(info)[i] != _widths(info)[candidates[0]] for i in candidates):
        raise ValueError("uniform widthwise pruning needs equal widths in the pruned layers; use global_ranking=True")
    per_q, per_kv, per_n = _unit_params(b)
    attn_total = b.num_heads * per_q + b.num_kv_heads * per_kv
    neuron_options = _neuron_options(b.intermediate_size, round_to)
    target_per_layer = ratio * lm_before / len(candidates)
    best = None
    for q, kv in head_options(b.num_heads, b.num_kv_heads):
        attn_removed = (b.num_heads - q) * per_q + (b.num_kv_heads - kv) * per_kv
        m_ideal = b.intermediate_size - (target_per_layer - attn_removed) / per_n
        m = min(neuron_options, key=lambda c: abs(c - m_ideal))
        achieved = len(candidates) * _removed(b, q, kv, m) / lm_before
        error = abs(achieved - ratio)
        balance = abs((1 - attn_removed / attn_total) - m / b.intermediate_size)
        key = (error > tol, balance if error <= tol else error, error)
        if best is None or key < best[0]:
            best = (key, (q, kv, m), achieved)
    if best[0][0]:  # nothing within tolerance
        max_ratio = len(candidates) * _removed(b, 1, 1, neuron_options[0]) / lm_before
        if ratio > max_ratio:
            raise ValueError(_max_ratio_message(ratio, max_ratio, candidates, round_to))
        raise ValueError(
            f"ratio={ratio} cannot be met within {tol:.0%} with round_to={round_to} (closest: {best[2]:.3f}); "
            "use a smaller round_to, more layers or global_ranking=True"
        )
    return best[1]


def _global_widths(info, scores: WidthScores, candidates, ratio, lm_before, round_to, tol) -> dict:
    """Per-block widths from one ranking across blocks: remove the fraction p of lowest-scoring heads
    and of lowest-scoring neurons over all candidate blocks, p found by bisection on the LM ratio."""

    def head_scores(i):  # multi-head attention: rank whole heads (= kv groups), else query heads
        b = info.blocks[i]
        return scores.kv_heads[i] if b.num_heads == b.num_kv_heads else scores.heads[i]

    all_heads = sorted((s, i, h) for i in candidates for h, s in enumerate(head_scores(i)))
    all_neurons = sorted((s, i, n) for i in candidates for n, s in enumerate(scores.neurons[i]))

    def widths_at(p: float) -> dict:
        removed_h = {i: 0 for i in candidates}
        removed_n = {i: 0 for i in candidates}
        for _, i, _ in all_heads[: int(p * len(all_heads))]:
            removed_h[i] += 1
        for _, i, _ in all_neurons[: int(p * len(all_neurons))]:
            removed_n[i] += 1
        out = {}
        for i in candidates:
            b = info.blocks[i]
            q_wanted = max(1, b.num_heads - removed_h[i])
            q, kv = min(head_options(b.num_heads, b.num_kv_heads), key=lambda o: (abs(o[0] - q_wanted), -o[1]))
            m_wanted = b.intermediate_size - removed_n[i]
            m = min(_neuron_options(b.intermediate_size, round_to), key=lambda c: abs(c - m_wanted))
            out[i] = (q, kv, m)
        return out

    def achieved(widths):
        return sum(_removed(info.blocks[i], *w) for i, w in widths.items()) / lm_before

    lo, hi = 0.0, 1.0
    max_ratio = achieved(widths_at(1.0))
    if ratio > max_ratio + tol:
        raise ValueError(_max_ratio_message(ratio, max_ratio, candidates, round_to))
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if achieved(widths_at(mid)) < ratio else (lo, mid)
    best = min((widths_at(lo), widths_at(hi)), key=lambda w: abs(achieved(w) - ratio))
    if abs(achieved(best) - ratio) > tol:
        raise ValueError(f"ratio={ratio} cannot be met within {tol:.0%} by global ranking with round_to={round_to}")
    return best


def _select_heads(head_scores, group_scores, num_heads, num_kv, q, kv) -> tuple[list[int], list[int]]:
    """Keep the kv best groups, and in each the q/kv best query heads (GQA stays valid)."""
    per_group, keep_per_group = num_heads // num_kv, q // kv
    groups = _top(group_scores, list(range(num_kv)), kv)
    heads = []
    for g in groups:
        heads += _top(head_scores, list(range(g * per_group, (g + 1) * per_group)), keep_per_group)
    return heads, groups


def _plan_widths(model, info, scores: WidthScores, ratio, layers, round_to, widths, global_ranking, tol=0.01):
    num = len(info.blocks)
    if len(scores.heads) != num:
        raise ValueError(f"scores cover {len(scores.heads)} blocks but the model has {num}; recompute them")
    candidates = _check_layers(layers, num, range(1, num - 1))
    if isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1:
        raise ValueError(f"round_to must be a positive int; got {round_to!r}")
    lm_before, _ = count_params(model)
    if widths is not None:
        b = info.blocks[candidates[0]]
        q, kv, m = widths
        if (q, kv) not in head_options(b.num_heads, b.num_kv_heads) or not 1 <= m <= b.intermediate_size:
            raise ValueError(
                f"widths must be (query heads, kv heads, neurons) with kv in [1, {b.num_kv_heads}], "
                f"query heads a multiple of kv up to {b.num_heads // b.num_kv_heads} per kv head, "
                f"neurons in [1, {b.intermediate_size}]; got {widths}"
            )
        per_layer = {i: (q, kv, m) for i in candidates}
    elif global_ranking:
        per_layer = _global_widths(info, scores, candidates, ratio, lm_before, round_to, tol)
    else:
        width = _solve_uniform(info, candidates, ratio, lm_before, round_to, tol)
        per_layer = {i: width for i in candidates}

    kept_heads, kept_kv, kept_neurons = [None] * num, [None] * num, [None] * num
    removed = 0
    for i, (q, kv, m) in per_layer.items():
        b = info.blocks[i]
        if (q, kv, m) == (b.num_heads, b.num_kv_heads, b.intermediate_size):
            continue  # nothing removed: leave the block untouched
        kept_heads[i], kept_kv[i] = _select_heads(
            scores.heads[i], scores.kv_heads[i], b.num_heads, b.num_kv_heads, q, kv
        )
        kept_neurons[i] = _top(scores.neurons[i], list(range(b.intermediate_size)), m)
        removed += _removed(b, q, kv, m)
    return _plan(
        model, info, scores, ratio, candidates, removed,
        kept_heads=kept_heads, kept_kv_heads=kept_kv, kept_neurons=kept_neurons,
        round_to=round_to, global_ranking=global_ranking, reduction=scores.reduction,
    )


def make_plan(
    model,
    scores: LayerScores | WidthScores,
    ratio: float | None,
    *,
    layers: Iterable[int] | None = None,
    round_to: int = 1,
    n_layers: int | None = None,
    widths: tuple[int, int, int] | None = None,
    global_ranking: bool = False,
) -> PruningPlan:
    """Decide what to remove for one ratio, from scores computed once.

    ratio: fraction of LM parameters to remove, in [0, 1) (ignored when n_layers / widths is given).
    layers: blocks that may be pruned (layerwise default: all; widthwise default: range(1, L-1)).
    layerwise: the nearest whole number of blocks (or exactly n_layers) with the lowest scores.
    widthwise: the same (query heads, kv heads, neurons) in every pruned block, solved to reach the ratio
    within 1 point with kept neurons a multiple of round_to (or `widths` given explicitly), or per-block
    widths from one ranking across blocks with global_ranking=True.
    """
    if not (scores.paradigm == "layerwise" and n_layers is not None) and not (
        scores.paradigm == "widthwise" and widths is not None
    ):
        _check_ratio(ratio)
    info = describe_lm(model)
    if scores.paradigm == "layerwise":
        if len(scores.scores) != len(info.blocks):
            raise ValueError(f"scores cover {len(scores.scores)} blocks but the model has {len(info.blocks)}")
        return _plan_layers(model, info, scores, ratio, layers, n_layers)
    return _plan_widths(model, info, scores, ratio, layers, round_to, widths, global_ranking)


# ----------------------------------------------------------------------------------------------
# Applying a plan


def _remove_layers(info: LMInfo, kept: list[int]) -> None:
    """Keep only the blocks `kept`; renumber layer_idx (the KV cache is indexed by it) and shorten
    every per-layer list of the config (layer_types, pruned widths, ...)."""
    old = len(info.blocks)
    info.decoder.layers = nn.ModuleList([info.blocks[i].layer for i in kept])
    for new_idx, layer in enumerate(info.decoder.layers):
        layer.self_attn.layer_idx = new_idx
        if hasattr(layer, "layer_idx"):
            layer.layer_idx = new_idx
    config = info.text_config
    config.num_hidden_layers = len(kept)
    for name, value in list(vars(config).items()):
        if isinstance(value, list) and len(value) == old and not name.endswith(("token_id", "token_ids")):
            setattr(config, name, [value[i] for i in kept])


def _stock_config_accepts(config, q: int, kv: int, m: int, head_dim: int) -> bool:
    """Ask the stock config class itself (LlamaConfig refuses hidden_size % num_attention_heads != 0)."""
    new = dict(num_attention_heads=q, num_key_value_heads=kv, intermediate_size=m, head_dim=head_dim)
    try:
        type(config).from_dict({**config.to_dict(), **new})
        return True
    except Exception:  # the config's own validation error
        return False


def _use_widths(info: LMInfo, widths: list[tuple[int, int, int]]) -> None:
    """Write the new widths into the text config, with stock fields when possible (same widths in every
    block and a head count the config accepts), else as per-layer lists of the registered subclass."""
    config = info.text_config
    head_dim = info.blocks[0].head_dim
    config.head_dim = head_dim  # explicit: hidden_size // num_attention_heads is no longer the head size
    if not is_pruned_config(config) and len(set(widths)) == 1 and _stock_config_accepts(config, *widths[0], head_dim):
        config.num_attention_heads, config.num_key_value_heads, config.intermediate_size = widths[0]
        return
    if not is_pruned_config(config):
        # Same object, new class: every module holding this config sees the change.
        config.__class__ = PRUNED_CLASSES[info.family][0]
    for k, list_name in enumerate(LAYER_FIELDS):
        setattr(config, list_name, [w[k] for w in widths])


def _rebuilt(old: nn.Module, make, state: dict) -> nn.Module:
    """A module from `make()` (built on the meta device, no init cost) holding the tensors in `state`."""
    with torch.device("meta"):
        new = make()
    new.load_state_dict(state, assign=True)
    old_params = dict(old.named_parameters())
    for name, p in new.named_parameters():
        p.requires_grad_(old_params[name].requires_grad)
    if any(t.is_meta for t in new.state_dict().values()) or any(t.is_meta for t in new.buffers()):
        raise RuntimeError(f"{type(new).__name__} has state not covered by the pruned weights")
    return new.train(old.training)


@torch.no_grad()
def _shrink_block(b: BlockInfo, family: str, layer_idx: int, heads, kv_heads, neurons, cfg) -> None:
    """Slice the kept rows/columns of every projection of block b and rebuild attention and MLP."""
    attn_names, mlp_names = FAMILIES[family].attention, FAMILIES[family].mlp
    hd, H, KV, inter = b.head_dim, b.num_heads, b.num_kv_heads, b.intermediate_size
    q_rows, kv_rows = _rows(heads, hd), _rows(kv_heads, hd)
    attn_state = b.attn.state_dict()
    if "qkv" in b.proj:
        slices = {attn_names["qkv"]: torch.cat([q_rows, H * hd + kv_rows, (H + KV) * hd + kv_rows])}
    else:
        slices = {attn_names["q"]: q_rows, attn_names["k"]: kv_rows, attn_names["v"]: kv_rows}
    for name, rows in slices.items():  # output rows (and bias)
        attn_state[f"{name}.weight"] = attn_state[f"{name}.weight"][rows]
        if f"{name}.bias" in attn_state:
            attn_state[f"{name}.bias"] = attn_state[f"{name}.bias"][rows]
    o = f"{attn_names['o']}.weight"
    attn_state[o] = attn_state[o][:, q_rows]  # input columns; o's bias is untouched

    n = torch.as_tensor(neurons, dtype=torch.long)
    mlp_state = b.mlp.state_dict()
    for role, name in mlp_names.items():  # output rows (and bias) of gate/up, fc1 or both halves of gate_up
        if role == "down":
            continue
        rows = torch.cat([n, inter + n]) if role == "gate_up" else n
        mlp_state[f"{name}.weight"] = mlp_state[f"{name}.weight"][rows]
        if f"{name}.bias" in mlp_state:
            mlp_state[f"{name}.bias"] = mlp_state[f"{name}.bias"][rows]
    down = f"{mlp_names['down']}.weight"
    mlp_state[down] = mlp_state[down][:, n]

    b.layer.self_attn = _rebuilt(b.attn, lambda: type(b.attn)(cfg, layer_idx=layer_idx), attn_state)
    b.layer.mlp = _rebuilt(b.mlp, lambda: type(b.mlp)(cfg), mlp_state)


def _check_plan_fits(info: LMInfo, plan: PruningPlan) -> None:
    if plan.num_layers != len(info.blocks) or plan.widths_before != _widths(info):
        raise ValueError(
            f"plan was made for a model with {plan.num_layers} blocks of widths {plan.widths_before[:1]}..., "
            f"this model has {len(info.blocks)} blocks of widths {_widths(info)[:1]}...; apply it to the original model"
        )


def widths_after(plan: PruningPlan) -> list[list[int]]:
    """[query heads, key/value heads, MLP neurons] of every block of the model the plan makes."""
    if plan.paradigm == "layerwise":
        return [plan.widths_before[i] for i in plan.kept_layers]
    kept = zip(plan.kept_heads, plan.kept_kv_heads, plan.kept_neurons, plan.widths_before)
    return [before if heads is None else [len(heads), len(kv), len(n)] for heads, kv, n, before in kept]


def apply_plan(model, plan: PruningPlan):
    """Prune `model` in place as the plan says and return it (deepcopy first to keep the original).
    Applying a plan to the model it already pruned changes nothing."""
    info = describe_lm(model)
    if _widths(info) == widths_after(plan) and count_params(model)[0] == plan.lm_params_after:
        return model  # already pruned by this plan (or a ratio-0 plan)
    _check_plan_fits(info, plan)
    if plan.paradigm == "layerwise":
        if plan.kept_layers != list(range(len(info.blocks))):
            _remove_layers(info, plan.kept_layers)
        return model
    changed = [i for i, heads in enumerate(plan.kept_heads) if heads is not None]
    if not changed:
        return model  # ratio 0: nothing to do, the model stays bit-identical
    widths = [
        (len(plan.kept_heads[i]), len(plan.kept_kv_heads[i]), len(plan.kept_neurons[i])) if i in changed
        else (b.num_heads, b.num_kv_heads, b.intermediate_size)
        for i, b in enumerate(info.blocks)
    ]
    _use_widths(info, widths)
    for i in changed:
        cfg = layer_config(info.text_config, i)
        kept = plan.kept_heads[i], plan.kept_kv_heads[i], plan.kept_neurons[i]
        _shrink_block(info.blocks[i], info.family, i, *kept, cfg)
    return model


# ----------------------------------------------------------------------------------------------
# Saving and the one-call entry point


def scores_to_dict(scores: LayerScores | WidthScores) -> dict:
    """The content of importance.json."""
    if isinstance(scores, LayerScores):
        out = {"criterion": scores.criterion, "paradigm": "layerwise", "tokens": scores.tokens, "scores": scores.scores}
        if scores.angular is not None:
            out["angular_distance_by_n_and_start"] = {str(n): d for n, d in scores.angular.items()}
    else:
        out = {
            "criterion": scores.criterion,
            "paradigm": "widthwise",
            "reduction": scores.reduction,
            "scores": [
                {"layer": i, "heads": h, "kv_heads": kv, "neurons": n}
                for i, (h, kv, n) in enumerate(zip(scores.heads, scores.kv_heads, scores.neurons))
            ],
        }
    out["calibration_fingerprint"] = scores.calibration_fingerprint
    return out


def save_pruned(model, plan: PruningPlan, scores, out_dir, processor=None) -> Path:
    """Write a HF checkpoint (safetensors), the processor if given, pruning_plan.json and importance.json."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    if processor is not None:
        processor.save_pretrained(out)
    plan.save(out / "pruning_plan.json")
    if scores is not None:
        (out / "importance.json").write_text(json.dumps(scores_to_dict(scores)))
    return out


@dataclass
class PruneResult:
    model: nn.Module
    plan: PruningPlan
    scores: LayerScores | WidthScores = field(repr=False)


def prune(
    model,
    paradigm: str,
    criterion: str,
    ratio: float | None,
    calib_batches: Iterable[dict] | None,
    *,
    layers: Iterable[int] | None = None,
    round_to: int = 1,
    seed: int = 0,
    n_layers: int | None = None,
    widths: tuple[int, int, int] | None = None,
    global_ranking: bool = False,
    reduction: str = "sum",
    tokens: str = "all",
    scores: LayerScores | WidthScores | None = None,
    inplace: bool = False,
) -> PruneResult:
    """Score (unless `scores` is given), plan and apply; the original model is left untouched unless
    inplace=True. See `make_plan` for the arguments."""
    get_criterion(paradigm, criterion)
    if not (n_layers is not None or widths is not None):
        _check_ratio(ratio)
    if scores is None:
        scores = compute_scores(
            model, paradigm, criterion, calib_batches or [], reduction=reduction, tokens=tokens, seed=seed
        )
    elif (scores.paradigm, scores.criterion) != (paradigm, criterion):
        raise ValueError(f"scores are for {scores.paradigm}/{scores.criterion}, not {paradigm}/{criterion}")
    plan = make_plan(
        model, scores, ratio, layers=layers, round_to=round_to, n_layers=n_layers, widths=widths,
        global_ranking=global_ranking,
    )
    target = model if inplace else copy.deepcopy(model)
    return PruneResult(apply_plan(target, plan), plan, scores)


__all__ = [
    "BlockInfo", "LMInfo", "LayerScores", "WidthScores", "PruningPlan", "PruneResult", "Criterion", "CRITERIA",
    "layer_criterion", "width_criterion", "unregister_criterion", "criteria", "get_criterion",
    "describe_lm", "count_params", "calibration_fingerprint", "calibration_batches", "default_calib_samples",
    "needs_calibration", "boundary_states", "weight_scores", "layer_scores", "width_scores",
    "compute_scores", "make_plan", "apply_plan", "scores_to_dict", "save_pruned", "prune",
]
