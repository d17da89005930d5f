"""Evaluation: batched greedy answers, answer normalisation, per-benchmark metrics, scores relative to a
reference model ("AVG %", as the study: the mean over benchmarks of 100 * score / reference score)."""

from __future__ import annotations

import re
import time
from collections import Counter
from pathlib import Path

import pandas as pd

from . import data as D
from .generation import generate_answers  # noqa: F401  (part of this module's API)

PRIMARY_METRIC = {b: "accuracy" for b in D.BENCHMARKS}
_WORDS = {w: str(i) for i, w in enumerate(D.NUMBER_WORDS)}
_ARTICLES = {"a", "an", "the"}


def normalize(text: str) -> str:
    """Lower-case, drop punctuation and articles, number words -> digits ("Two." -> "2")."""
    words = re.sub(r"[^\w\s]", " ", text.lower()).split()
    return " ".join(_WORDS.get(w, w) for w in words if w not in _ARTICLES)


def parse_yes_no(text: str) -> str:
    """The first "yes" or "no" word of the reply ("Yes." -> yes, "red circle, yes" -> yes), else ""."""
    return next((w for w in normalize(text).split() if w in ("yes", "no")), "")


def parse_letter(text: str) -> str:
    """First option letter: "B", "B.", "(B) circle", "the answer is B" -> "B"."""
    m = re.search(r"\b([A-F])\b", text.strip())
    return m.group(1) if m else ""


def parse_digits(text: str) -> str:
    """Digits of an OCR answer, spaces removed ("4 7" -> "47")."""
    return "".join(ch for ch in normalize(text) if ch.isdigit())


def is_correct(benchmark: str, prediction: str, answer: str) -> bool:
    if benchmark == "pope":
        return parse_yes_no(prediction) == answer
    if benchmark == "mcq":
        return parse_letter(prediction) == answer
    if benchmark == "ocr":
        return parse_digits(prediction) == answer
    return normalize(prediction) == normalize(answer)


def item_scores(benchmark: str, predictions: list[str], ds) -> list[int]:
    """Per item, 1 if answered right (`is_correct`) else 0, in the benchmark's item order: the results behind
    its accuracy (their mean), kept so that intervals can be computed later (`studylib.intervals`)."""
    return [int(is_correct(benchmark, p, a)) for p, a in zip(predictions, ds["answer"])]


def score_benchmark(benchmark: str, predictions: list[str], ds) -> dict[str, float]:
    """accuracy for every benchmark; POPE adds F1 (positive = "yes"), yes-ratio and per-category accuracy."""
    answers = ds["answer"]
    correct = item_scores(benchmark, predictions, ds)
    out = {"accuracy": sum(correct) / len(correct)}
    if benchmark == "pope":
        pred = [parse_yes_no(p) for p in predictions]
        tp = sum(p == "yes" and a == "yes" for p, a in zip(pred, answers))
        fp = sum(p == "yes" and a == "no" for p, a in zip(pred, answers))
        fn = sum(p != "yes" and a == "yes" for p, a in zip(pred, answers))
        out["f1"] = 2 * tp / max(2 * tp + fp + fn, 1)
        out["yes_ratio"] = pred.count("yes") / len(pred)
        for cat in ("random", "popular", "adversarial"):
            idx = [i for i, c in enumerate(ds["category"]) if c == cat]
            if idx:
                out[f"accuracy_{cat}"] = sum(correct[i] for i in idx) / len(idx)
    return out


def load_benchmarks(names: list[str] | None = None, n: int = 500, seed: int = 0, cache_dir=None) -> dict:
    names = D.check_names("benchmark", names or D.BENCHMARKS, D.BENCHMARKS)
    return {b: D.build_dataset(b, n, seed, cache_dir) for b in names}


def evaluate(model, processor, benchmarks: dict, model_name: str = "model", batch_size: int = 64,
             blank_images: bool = False, progress: bool = True) -> pd.DataFrame:
    """Tidy table with one row per (model, benchmark, metric): columns model, benchmark, metric, score, n,
    chance, seconds, primary. `benchmarks` maps names to datasets: the embedded ones (`load_benchmarks`) or
    real ones (`benchmarks.load_real`, scored with their official metrics by `benchmarks.evaluate_real`)."""
    return evaluate_items(model, processor, benchmarks, model_name, batch_size, blank_images, progress)[0]


def evaluate_items(model, processor, benchmarks: dict, model_name: str = "model", batch_size: int = 64,
                   blank_images: bool = False, progress: bool = True) -> tuple[pd.DataFrame, dict[str, list[int]]]:
    """`evaluate`'s table and the per-item results behind it, {benchmark: `item_scores`}, for the embedded
    benchmarks (a real benchmark's official metric is not always a mean over items: it has none here)."""
    from . import benchmarks as B

    rows, items = [], {}
    for name, ds in benchmarks.items():
        if B.is_real(ds):
            rows += B.evaluate_real(model, processor, {name: ds}, model_name, min(batch_size, 16),
                                    blank_images=blank_images, progress=progress).to_dict(orient="records")
            continue
        t0 = time.perf_counter()
        preds = generate_answers(model, processor, ds, batch_size, blank_images=blank_images, progress=progress)
        secs = time.perf_counter() - t0
        chance = D.chance_level(ds)
        items[name] = item_scores(name, preds, ds)
        for metric, score in score_benchmark(name, preds, ds).items():
            rows.append({"model": model_name, "benchmark": name, "metric": metric, "score": score,
                         "n": len(ds), "chance": chance if metric == "accuracy" else None, "seconds": secs,
                         "primary": metric == PRIMARY_METRIC[name]})
    return pd.DataFrame(rows), items


def evaluate_cached(model, processor, benchmarks: dict, folder: str | Path, model_name: str = "model",
                    key: str = "", items: bool = False, **kw):
    """`evaluate`, stored in `folder/evaluation-<key>.json` with its per-item results and read back on the
    next call; with items=True, (table, `evaluate_items`' per-item results). The key (`files.key`) covers the
    benchmarks' dataset fingerprints, the options and `key` (e.g. a pruning plan): the caller promises that
    `folder` + `key` identify the model (a checkpoint folder does)."""
    import json

    from . import files

    ident = {"benchmarks": {b: ds._fingerprint for b, ds in benchmarks.items()}, "key": key,
             "options": {k: v for k, v in kw.items() if k != "progress"}}
    path = Path(folder) / f"evaluation-{files.key(ident)}.json"
    stored = json.loads(path.read_text()) if path.exists() else {}
    if "table" in stored and "items" in stored:  # a file of an earlier version, without items, is made again
        table, per_item = pd.DataFrame(stored["table"]).assign(model=model_name), stored["items"]
    else:
        table, per_item = evaluate_items(model, processor, benchmarks, model_name, **kw)
        files.write_json(path, {"ident": ident, "table": table.to_dict(orient="records"), "items": per_item})
    return (table, per_item) if items else table


def primary(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, benchmark): the benchmark's primary metric (the `primary` column; tables cached
    before it existed hold embedded benchmarks, whose primary metric is accuracy)."""
    if "primary" in table.columns:
        keep = table["primary"].fillna(False).astype(bool)
    else:
        keep = table["metric"] == table["benchmark"].map(PRIMARY_METRIC)
    return table[keep].reset_index(drop=True)


def chance_level(name: str, ds) -> float:
    """The primary score of a blind guesser on benchmark `name` (embedded or real)."""
    from . import benchmarks as B

    return B.chance_level(name, ds) if B.is_real(ds) else D.chance_level(ds)


def relative_scores(table: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """Per benchmark: relative = 100 * score / reference score (primary metrics). AVG % is their mean."""
    ref = primary(reference).set_index("benchmark")["score"]
    out = primary(table)[["model", "benchmark", "score"]].copy()
    out["reference"] = out["benchmark"].map(ref)
    if out["reference"].isna().any() or (out["reference"] <= 0).any():
        missing = out.loc[out["reference"].isna() | (out["reference"] <= 0), "benchmark"].tolist()
        raise ValueError(f"reference has no positive score for benchmarks {missing}")
    out["relative"] = 100 * out["score"] / out["reference"]
    return out


def avg_percent(table: pd.DataFrame, reference: pd.DataFrame, benchmarks: list[str] | None = None) -> float:
    """AVG % = mean over benchmarks of 100 * score / reference score."""
    rel = relative_scores(table, reference)
    if benchmarks is not None:
        rel = rel[rel["benchmark"].isin(benchmarks)]
    return float(rel["relative"].mean())


def summary(table: pd.DataFrame) -> dict[str, float]:
    """Primary score per benchmark and, for the embedded suite, the mean accuracy over its image benchmarks
    (real benchmarks mix units, e.g. MME points, so they get no mean)."""
    prim = primary(table)
    p = prim.set_index("benchmark")["score"]
    out = {b: float(s) for b, s in p.items()}
    embedded = (prim["metric"] == prim["benchmark"].map(PRIMARY_METRIC)).all() and set(out) <= set(D.BENCHMARKS)
    img = [out[b] for b in D.IMAGE_BENCHMARKS if b in out]
    if img and embedded:
        out["image_mean"] = sum(img) / len(img)
    return out


def answer_distribution(predictions: list[str]) -> Counter:
    return Counter(normalize(p) for p in predictions)
