"""Real multimodal benchmarks in the lmms-lab dataset schemas, with LLaVA-1.5 prompts and official metrics.

`load_real(name, source)` reads a benchmark from a local folder (or, when online, from the hub) and converts
every row to the repo's record schema (`studylib.llava_json.features()` plus three scoring columns), so that
`studylib.generation.generate_answers` runs on it unchanged; `score_real` computes the official metrics and
`evaluate_real` returns the same tidy table as `studylib.evaluation.evaluate`.

Schemas assumed (lmms-lab datasets on the hub; columns the loader reads in **bold**, others are ignored):

| name | hub id / config / split | columns |
|---|---|---|
| `gqa` | lmms-lab/GQA, `testdev_balanced_instructions`, `testdev` (questions) and `testdev_balanced_images`, `testdev` (images, joined on imageId) | questions: **id**, **imageId**, **question**, **answer**, fullAnswer, isBalanced, groups, entailed, equivalent, **types** (struct; `structural` is the qtype, optional), annotations, semantic, semanticStr; images: **id**, **image** |
| `pope` | lmms-lab/POPE, default config, `test` | id, **question_id**, **question**, **answer** ("yes"/"no"), image_source, **image**, **category** (adversarial/popular/random) |
| `scienceqa-img` | lmms-lab/ScienceQA, `ScienceQA-IMG`, `test` | **image**, **question**, **choices** (list of str), **answer** (int index), **hint**, task, grade, **subject**, topic, category, skill, lecture, solution |
| `mme` | lmms-lab/MME, default config, `test` | **question_id** (image file name, 2 questions each), **image**, **question** (ends "Please answer yes or no."), **answer** ("Yes"/"No"), **category** |
| `textvqa` | lmms-lab/textvqa, default config, `validation` | image_id, **question_id**, **question**, question_tokens, **image**, image_width, image_height, flickr_original_url, flickr_300k_url, **answers** (10 str), image_classes, set_name, **ocr_tokens** (list of str, optional) |
| `mmmu` | lmms-lab/MMMU, default config, `validation` | **id**, **question** (with "<image 1>" placeholders), **options** (str holding a Python list literal, read with `ast.literal_eval`), explanation, **image_1**, image_2..image_7, img_type, **answer**, topic_difficulty, **question_type** ("multiple-choice"/"open"), subfield |

Prompts (LLaVA-1.5 / lmms-eval; every prompt gets "<image>\\n" in front when the row has an image):

| name | prompt |
|---|---|
| `gqa`, `pope` | question + "\\nAnswer the question using a single word or phrase." |
| `mme` | question (already ends "Please answer yes or no.") + the same suffix (LLaVA-1.5's llava_mme.jsonl, lmms-eval) |
| `textvqa` | question + "\\nReference OCR token: t1, t2, ..." (LLaVA-1.5's `_ocr` question file; left out when a row has no OCR tokens) + the same suffix |
| `scienceqa-img` | "Context: {hint}\\n" (only when hint is not empty) + question + "\\nA. c0\\nB. c1..." + "\\nAnswer with the option's letter from the given choices directly." |
| `mmmu` | multiple-choice: question + "\\nA. o0\\nB. o1...\\n\\nAnswer with the option's letter from the given choices directly."; open: question + "\\n\\nAnswer the question using a single word or phrase." (lmms-eval's mmmu_val; "<image i>" placeholders are kept as text) |

Metrics (`score_real`; the primary metric of each benchmark is `PRIMARY_METRIC[name]`):

| name | metrics |
|---|---|
| `gqa` | accuracy = exact match after lower-casing, removing punctuation and surrounding spaces (lmms-eval exact_match with ignore_case, ignore_punctuation; LLaVA's convert_gqa_for_eval lower-cases and strips the final period) |
| `pope` | a reply is "no" when its first sentence has the word "no", "No" or "not", else "yes" (POPE's and LLaVA's eval_pope.py); positive = yes: accuracy, precision = TP/(TP+FP), recall = TP/(TP+FN), **f1** = 2PR/(P+R), yes_ratio = share of "yes" replies; accuracy_{c} and f1_{c} per category c; f1_mean_category = mean of the per-category F1 (the number LLaVA-1.5's table reports) |
| `scienceqa-img` | accuracy of the parsed letter (LLaVA's eval_science_qa.py: the reply is a letter, or starts "X. ", or contains "The answer is X."; anything else, or a letter past the choices, is wrong) |
| `mme` | per category c (official MME calculation.py): score_c = acc + acc+, acc = 100 x share of questions right, acc+ = 100 x share of images (question_id) with every question right (0-200); **perception** = sum over existence, count, position, color, posters, celebrity, scene, landmark, artwork, OCR (max 2000); cognition = sum over commonsense_reasoning, numerical_calculation, text_translation, code_reasoning (max 800); total = perception + cognition; also accuracy and accuracy_plus as fractions |
| `textvqa` | accuracy = VQA accuracy: after the EvalAI/VQA answer normalisation, mean over the 10 leave-one-out subsets of 9 human answers of min(1, matches / 3) |
| `mmmu` | accuracy (MMMU's eval: multiple-choice by `parse_multi_choice_response`, open by `parse_open_response` + `eval_open`, i.e. normalised string containment or number match rounded to 2 decimals); accuracy_multiple-choice, accuracy_open |

Deviations, all stated: our models take ONE image, so MMMU uses `image_1` only (questions about image 2..7 see
only the first image); MMMU's "no letter found -> random letter" rule is kept but seeded by the question id, so
scores are reproducible; an MMMU open answer stored as a list literal ("['1.5', '1.50']") counts every listed
answer as correct. Chance (`chance_level`) is the primary score of a blind guesser who always gives the most
frequent answer of the question's type, as `studylib.data.chance_level`.

Local folders accepted by `load_real`: (a) written by `datasets.Dataset.save_to_disk` or
`DatasetDict.save_to_disk` (at `folder/`, `folder/<config>/` or `folder/<config>/<split>/`), or (b) the hub
repository's parquet files: `folder/<config>/<split>-*.parquet`, `folder/data/<split>-*.parquet`,
`folder/<split>-*.parquet` (or a `<split>/` folder of parquet files in place of `<split>-*.parquet`). GQA needs
both of its configs in `folder/<config>/`.
"""

from __future__ import annotations

import ast
import json
import os
import random
import re
import string
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import data as D
from . import files, llava_json

LOADER_VERSION = "1"  # part of the record cache key: bump when prompts or record fields change
SHORT_ANSWER = "\nAnswer the question using a single word or phrase."
LETTER_ANSWER = "\nAnswer with the option's letter from the given choices directly."
LETTERS = [chr(ord("A") + i) for i in range(26)]
MME_PERCEPTION = ["existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark",
                  "artwork", "OCR"]
MME_COGNITION = ["commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning"]
POPE_CATEGORIES = ["adversarial", "popular", "random"]


def real_features():
    """`studylib.llava_json.features()` plus the scoring columns: `options` (lettered choices), `answers` (TextVQA's
    10 human answers) and `group` (MME's image, i.e. question_id)."""
    from datasets import Value

    f = llava_json.features()
    f["options"] = [Value("string")]
    f["answers"] = [Value("string")]
    f["group"] = Value("string")
    return f


# ----------------------------------------------------------------------------------------------
# Answer normalisation and parsing


def normalize_exact(text: str) -> str:
    """GQA exact match: lower-case, drop ASCII punctuation, trim and collapse spaces."""
    return " ".join(text.lower().translate(str.maketrans("", "", string.punctuation)).split())


# The EvalAI / VQA answer normalisation (VQA's vqaEval.py, as lmms-eval's EvalAIAnswerProcessor), compact:
# contractions are listed once with their apostrophes; every spelling with some apostrophes dropped maps to it.
# (The official table's capitalised "I" forms never match lower-cased text and are left out.)
_CONTRACTED = """ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've hasn't haven't
he'd he'd've he's how'd how'll how's isn't it'd it'd've it'll ma'am mightn't mightn't've might've mustn't must've
needn't not've o'clock oughtn't 'ow's'at shan't she'd've should've shouldn't shouldn't've somebody'd somebody'd've
somebody'll somebody's someone'd someone'd've someone'll someone's something'd something'd've something'll that's
there'd there'd've there're there's they'd they'd've they'll they're they've 'twas wasn't we'd've we've weren't
what'll what're what's what've when's where'd where's where've who'd who'd've who'll who's who've why'll why're why's
won't would've wouldn't wouldn't've y'all y'all'll y'all'd've you'd you'd've you'll you're you've""".split()


def _apostrophe_variants(word: str) -> set[str]:
    pos = [i for i, ch in enumerate(word) if ch == "'"]
    out = set()
    for mask in range(1, 2 ** len(pos)):
        drop = {p for k, p in enumerate(pos) if mask >> k & 1}
        out.add("".join(ch for i, ch in enumerate(word) if i not in drop))
    return out


CONTRACTIONS = {v: w for w in _CONTRACTED for v in _apostrophe_variants(w)}
_NUMBER_MAP = {"none": "0", **{w: str(i) for i, w in enumerate(D.NUMBER_WORDS)}}
_VQA_PUNCT = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")  # sic: the official pattern (a period not before a digit)
_COMMA_STRIP = re.compile(r"(?<=\d)(\,)+(?=\d)")


def normalize_vqa(text: str) -> str:
    """EvalAI/VQA normalisation: lower-case; drop "," "?"; split "'s"; punctuation removed (or spaced when it
    sits inside a word); periods not before a digit dropped; number words -> digits; articles dropped;
    contractions restored ("dont" -> "don't")."""
    t = text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    t = t.replace("\n", " ").replace("\t", " ").strip()
    out = t
    for p in _VQA_PUNCT:
        if p + " " in t or " " + p in t or _COMMA_STRIP.search(t) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    out = _PERIOD_STRIP.sub("", out)
    words = [_NUMBER_MAP.get(w, w) for w in out.split()]
    return " ".join(CONTRACTIONS.get(w, w) for w in words if w not in ("a", "an", "the"))


def vqa_accuracy(prediction: str, answers: list[str]) -> float:
    """VQA accuracy: mean over the len(answers) leave-one-out subsets of min(1, #matches in the subset / 3).

    With 10 answers and k of them equal to the prediction: k=1 -> 0.3, k=2 -> 0.6, k=3 -> 0.9, k>=4 -> 1.
    """
    pred = normalize_vqa(prediction)
    gts = [normalize_vqa(a) for a in answers]
    if not gts:
        return 0.0
    accs = [min(1.0, sum(g == pred for j, g in enumerate(gts) if j != i) / 3) for i in range(len(gts))]
    return sum(accs) / len(accs)


def parse_pope(text: str) -> str:
    """POPE / LLaVA eval_pope.py: keep the first sentence, drop commas; "no" when its words include "No", "no"
    or "not", else "yes" (an empty reply counts as "yes", as there)."""
    if "." in text:
        text = text.split(".")[0]
    words = text.replace(",", "").split(" ")
    return "no" if ("No" in words or "not" in words or "no" in words) else "yes"


def parse_mme(text: str) -> str:
    """MME (lmms-eval, from Otter): "yes"/"no" when the reply is exactly that (case, periods ignored), else
    whichever of them occurs in its first 4 characters, else "other"."""
    t = text.lower().strip().replace(".", "")
    if t in ("yes", "no"):
        return t
    return "yes" if "yes" in t[:4] else "no" if "no" in t[:4] else "other"


def parse_sqa_letter(text: str, n_choices: int) -> str:
    """LLaVA eval_science_qa.py: the reply is a letter, or starts "X. ", or has exactly one "The answer is X.";
    the letter must be one of the first `n_choices`. Returns "" when there is none."""
    text = text.strip()
    options = LETTERS[:5]  # LLaVA's --options A B C D E
    if text in options:
        letter = text
    elif len(text) >= 3 and text[0] in options and text[1:3] == ". ":
        letter = text[0]
    else:
        found = re.findall(r"The answer is ([A-Z]).", text)
        letter = found[0] if len(found) == 1 else ""
    return letter if letter in LETTERS[:n_choices] else ""


def parse_mmmu_choice(response: str, options: list[str], seed: str = "") -> str:
    """MMMU's `parse_multi_choice_response` (as lmms-eval): "(B)", then "B " / "B.", then (replies over 5
    words) an option's text; several candidates -> the one that occurs last; none -> a random letter, here
    seeded by `seed` (the question id) so the score is reproducible."""
    choices = LETTERS[:len(options)]
    index2ans = dict(zip(choices, options))
    for ch in [",", ".", "!", "?", ";", ":", "'"]:
        response = response.strip(ch)
    response = " " + response + " "
    cands = [c for c in choices if f"({c})" in response]
    brackets, by_letter = bool(cands), True
    if not cands:
        cands = [c for c in choices if f"{c} " in response]
    if not cands:
        cands = [c for c in choices if f"{c}." in response]
    if not cands and len(response.split()) > 5:
        cands = [c for c, a in index2ans.items() if a.lower() in response.lower()]
        by_letter = False
    if not cands:
        return random.Random(seed).choice(choices) if choices else ""
    if len(cands) == 1:
        return cands[0]
    if by_letter:
        pos = [response.rfind(f"({c})" if brackets else f" {c} ") for c in cands]
    else:
        pos = [response.lower().rfind(index2ans[c].lower()) for c in cands]
    return cands[int(np.argmax(pos))]


def _mmmu_number(s: str) -> float | None:
    try:
        return round(float(s.replace(",", "")), 2)
    except ValueError:
        return None


def _mmmu_norm(s: str) -> list:
    """MMMU `normalize_str`: a number -> [it rounded to 2 decimals]; a 1-character string -> [" s", "s "]."""
    s = s.strip()
    num = _mmmu_number(s)
    if num is not None:
        return [num]
    s = s.lower()
    return [" " + s, s + " "] if len(s) == 1 else [s]


def _mmmu_numbers(s: str) -> list[str]:
    return (re.findall(r"-?\b\d{1,3}(?:,\d{3})+\b", s) + re.findall(r"-?\d+(?:\.\d+)?[eE][+-]?\d+", s)
            + re.findall(r"-?(?:\d+\.\d+|\.\d+|\d+)(?![eE][+-]?\d+)(?![,\d])", s))


def parse_mmmu_open(response: str) -> list:
    """MMMU's `parse_open_response`: the shortest tails after "could be", "so", "is", "thus", "therefore",
    "final", "answer", "result" (and "=" in the last sentence) of each sentence, plus the numbers in them,
    normalised."""
    resp = response.strip().strip(".").lower()
    subs = re.split(r"\.\s(?=[A-Z])|\n", resp)
    keys_ind = ["could be ", "so ", "is ", "thus ", "therefore ", "final ", "answer ", "result "]
    keys = []
    for i, sub in enumerate(subs):
        inds = keys_ind + (["="] if i == len(subs) - 1 else [])
        tails = [sub.split(ind)[-1].strip() for ind in inds if ind in sub]
        if tails:
            shortest = min(tails, key=len)
            if shortest not in [":", ",", ".", "!", "?", ";", "'"]:
                keys.append(shortest)
    keys = keys or [resp]
    preds = keys + [n for k in keys for n in _mmmu_numbers(k)]
    out = []
    for p in preds:
        for v in _mmmu_norm(p):
            if v not in out:
                out.append(v)
    return out


def mmmu_open_correct(response: str, answer: str) -> bool:
    """MMMU `eval_open`: a parsed string prediction is right when it contains a normalised answer, a parsed
    number when it equals one. An answer stored as a list literal lists alternatives."""
    golds: list[str] = [answer]
    if answer.strip().startswith("["):
        try:
            lit = ast.literal_eval(answer.strip())
            golds = [str(a) for a in lit] if isinstance(lit, (list, tuple)) else golds
        except (ValueError, SyntaxError):
            pass
    norm = [v for g in golds for v in _mmmu_norm(g)]
    for p in parse_mmmu_open(response):
        if isinstance(p, str):
            if any(isinstance(g, str) and g in p for g in norm):
                return True
        elif p in norm:
            return True
    return False


def parse_options(text: str, where: str) -> list[str]:
    """MMMU's `options` column: a string holding a Python list literal, read with `ast.literal_eval` (never
    eval)."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = None
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, (str, int, float)) for v in value):
        raise ValueError(f"{where}: options must be a list literal such as \"['a', 'b']\", got {text[:80]!r}")
    return [str(v) for v in value]


# ----------------------------------------------------------------------------------------------
# lmms-lab row -> record fields (prompt without "<image>\n", answer, qtype, category, options, answers, group)


def lettered(options: list[str]) -> str:
    """"A. o0\\nB. o1..." as LLaVA / lmms-eval list choices."""
    return "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(options))


def _gqa(row: dict, i: int) -> dict:
    types = row.get("types") or {}
    return {"id": str(row["id"]), "prompt": row["question"] + SHORT_ANSWER, "answer": str(row["answer"]),
            "qtype": str(types.get("structural") or "gqa") if isinstance(types, dict) else "gqa"}


def _pope(row: dict, i: int) -> dict:
    return {"id": str(row["question_id"]), "prompt": row["question"].strip() + SHORT_ANSWER,
            "answer": row["answer"].strip().lower(), "qtype": "pope", "category": row["category"]}


def _sqa(row: dict, i: int) -> dict:
    choices = [str(c) for c in row["choices"]]
    context = f"Context: {row['hint']}\n" if row.get("hint") else ""
    return {"id": str(row.get("id") or f"scienceqa-img-{i:06d}"),
            "prompt": f"{context}{row['question']}\n{lettered(choices)}{LETTER_ANSWER}",
            "answer": LETTERS[int(row["answer"])], "qtype": f"{len(choices)}-choices",
            "category": str(row.get("subject") or ""), "options": choices}


def _mme(row: dict, i: int) -> dict:
    return {"id": f"{row['question_id']}#{i}", "prompt": row["question"].strip() + SHORT_ANSWER,
            "answer": row["answer"].strip(), "qtype": row["category"], "category": row["category"],
            "group": str(row["question_id"])}


def _textvqa(row: dict, i: int) -> dict:
    answers = [str(a) for a in row["answers"]]
    ocr = [str(t) for t in (row.get("ocr_tokens") or [])]
    ref = f"\nReference OCR token: {', '.join(ocr)}" if ocr else ""
    return {"id": str(row["question_id"]), "prompt": f"{row['question']}{ref}{SHORT_ANSWER}",
            "answer": Counter(answers).most_common(1)[0][0] if answers else "", "qtype": "textvqa",
            "answers": answers}


def _mmmu(row: dict, i: int) -> dict:
    qtype = row["question_type"]
    out = {"id": str(row["id"]), "answer": str(row["answer"]), "qtype": qtype,
           "category": str(row["id"]).split("_", 1)[-1].rsplit("_", 1)[0]}
    if qtype == "multiple-choice":
        opts = parse_options(row["options"], f"mmmu row id={row['id']!r}")
        out.update(prompt=f"{row['question']}\n{lettered(opts)}\n{LETTER_ANSWER}", options=opts)
    else:
        out["prompt"] = f"{row['question']}\n{SHORT_ANSWER}"
    return out


# ----------------------------------------------------------------------------------------------
# Scores


def _col(ds, key: str) -> list:
    return list(ds[key])


def score_gqa(predictions: list[str], ds) -> dict[str, float]:
    """accuracy = share of normalize_exact(prediction) == normalize_exact(answer)."""
    ok = [normalize_exact(p) == normalize_exact(a) for p, a in zip(predictions, _col(ds, "answer"))]
    return {"accuracy": sum(ok) / len(ok)}


def _prf(pred: list[str], gold: list[str]) -> dict[str, float]:
    tp = sum(p == "yes" and g == "yes" for p, g in zip(pred, gold))
    fp = sum(p == "yes" and g == "no" for p, g in zip(pred, gold))
    fn = sum(p == "no" and g == "yes" for p, g in zip(pred, gold))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {"accuracy": sum(p == g for p, g in zip(pred, gold)) / len(gold), "precision": precision,
            "recall": recall, "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
            "yes_ratio": pred.count("yes") / len(pred)}


def score_pope(predictions: list[str], ds) -> dict[str, float]:
    """accuracy, precision, recall, f1 (positive = yes), yes_ratio; accuracy_c and f1_c per category c;
    f1_mean_category."""
    pred = [parse_pope(p) for p in predictions]
    gold = [a.strip().lower() for a in _col(ds, "answer")]
    out = _prf(pred, gold)
    cats = _col(ds, "category")
    per = []
    for c in POPE_CATEGORIES:
        idx = [i for i, x in enumerate(cats) if x == c]
        if idx:
            m = _prf([pred[i] for i in idx], [gold[i] for i in idx])
            out[f"accuracy_{c}"], out[f"f1_{c}"] = m["accuracy"], m["f1"]
            per.append(m["f1"])
    if per:
        out["f1_mean_category"] = sum(per) / len(per)
    return out


def score_sqa(predictions: list[str], ds) -> dict[str, float]:
    """accuracy of `parse_sqa_letter` against the answer letter."""
    ok = [parse_sqa_letter(p, len(o)) == a
          for p, a, o in zip(predictions, _col(ds, "answer"), _col(ds, "options"))]
    return {"accuracy": sum(ok) / len(ok)}


def score_mme(predictions: list[str], ds) -> dict[str, float]:
    """Per category c: score_c = 100 * (questions right / questions) + 100 * (images with all questions right /
    images), images = distinct `group` (MME's question_id); perception / cognition = sums over their categories."""
    gold = [a.lower().strip().replace(".", "") for a in _col(ds, "answer")]
    ok = [parse_mme(p) == g for p, g in zip(predictions, gold)]
    cats, groups = _col(ds, "category"), _col(ds, "group")
    unknown = sorted(set(cats) - set(MME_PERCEPTION) - set(MME_COGNITION))
    if unknown:
        raise ValueError(f"mme: unknown categories {unknown}; valid categories are: "
                         f"{', '.join(MME_PERCEPTION + MME_COGNITION)}")
    out: dict[str, float] = {}
    by_image: dict[tuple[str, str], list[bool]] = {}
    for c, g, o in zip(cats, groups, ok):
        by_image.setdefault((c, g), []).append(o)
    for c in MME_PERCEPTION + MME_COGNITION:
        qs = [o for cat, o in zip(cats, ok) if cat == c]
        if qs:
            imgs = [all(v) for (cat, _), v in by_image.items() if cat == c]
            out[f"score_{c}"] = 100 * sum(qs) / len(qs) + 100 * sum(imgs) / len(imgs)
    out["perception"] = sum(out.get(f"score_{c}", 0.0) for c in MME_PERCEPTION)
    out["cognition"] = sum(out.get(f"score_{c}", 0.0) for c in MME_COGNITION)
    out["total"] = out["perception"] + out["cognition"]
    out["accuracy"] = sum(ok) / len(ok)
    out["accuracy_plus"] = sum(all(v) for v in by_image.values()) / len(by_image)
    return out


def score_textvqa(predictions: list[str], ds) -> dict[str, float]:
    """accuracy = mean VQA accuracy (`vqa_accuracy`) over questions."""
    accs = [vqa_accuracy(p, a) for p, a in zip(predictions, _col(ds, "answers"))]
    return {"accuracy": sum(accs) / len(accs)}


def score_mmmu(predictions: list[str], ds) -> dict[str, float]:
    """accuracy over all questions; accuracy_multiple-choice and accuracy_open over each type."""
    ok, types = [], _col(ds, "qtype")
    for p, a, o, t, i in zip(predictions, _col(ds, "answer"), _col(ds, "options"), types, _col(ds, "id")):
        ok.append(parse_mmmu_choice(p, o, seed=i) == a if t == "multiple-choice" else mmmu_open_correct(p, a))
    out = {"accuracy": sum(ok) / len(ok)}
    for t in ("multiple-choice", "open"):
        sel = [o for o, tt in zip(ok, types) if tt == t]
        if sel:
            out[f"accuracy_{t}"] = sum(sel) / len(sel)
    return out


# ----------------------------------------------------------------------------------------------
# Registry


@dataclass(frozen=True)
class RealBenchmark:
    """A real benchmark: where it lives, the columns it needs, row -> record, and its scorer."""

    hub_id: str
    config: str | None
    split: str
    columns: tuple[str, ...]  # required columns of the question table
    to_record: Callable[[dict, int], dict]
    score: Callable[[list[str], Any], dict]
    primary: str
    max_new_tokens: int  # greedy budget (generation stops earlier at </s>)
    image_column: str = "image"
    images: tuple[str, str] | None = None  # (config, split) of a separate image table joined on imageId (GQA)


REAL_BENCHMARKS: dict[str, RealBenchmark] = {
    "gqa": RealBenchmark("lmms-lab/GQA", "testdev_balanced_instructions", "testdev",
                         ("id", "imageId", "question", "answer"), _gqa, score_gqa, "accuracy", 16,
                         images=("testdev_balanced_images", "testdev")),
    "pope": RealBenchmark("lmms-lab/POPE", None, "test", ("question_id", "question", "answer", "image", "category"),
                          _pope, score_pope, "f1", 8),
    "scienceqa-img": RealBenchmark("lmms-lab/ScienceQA", "ScienceQA-IMG", "test",
                                   ("image", "question", "choices", "answer", "hint"), _sqa, score_sqa, "accuracy", 8),
    "mme": RealBenchmark("lmms-lab/MME", None, "test", ("question_id", "image", "question", "answer", "category"),
                         _mme, score_mme, "perception", 8),
    "textvqa": RealBenchmark("lmms-lab/textvqa", None, "validation", ("question_id", "question", "image", "answers"),
                             _textvqa, score_textvqa, "accuracy", 16),
    "mmmu": RealBenchmark("lmms-lab/MMMU", None, "validation",
                          ("id", "question", "options", "image_1", "answer", "question_type"), _mmmu, score_mmmu,
                          "accuracy", 16, image_column="image_1"),
}
PRIMARY_METRIC = {n: s.primary for n, s in REAL_BENCHMARKS.items()}


def get_spec(name: str) -> RealBenchmark:
    D.check_names("real benchmark", [name], list(REAL_BENCHMARKS))
    return REAL_BENCHMARKS[name]


def score_real(name: str, predictions: list[str], ds) -> dict[str, float]:
    """The official metrics of benchmark `name` (see the module docstring) for `predictions` on records `ds`
    (a Dataset from `load_real`, or a dict of its columns)."""
    spec = get_spec(name)
    n = len(ds["answer"])
    if len(predictions) != n or n == 0:
        raise ValueError(f"{name}: {len(predictions)} predictions for {n} records")
    return spec.score(list(predictions), ds)


def chance_level(name: str, ds) -> float:
    """Primary score of a blind guesser who always answers the most frequent answer of the question's qtype."""
    qtypes, answers = _col(ds, "qtype"), _col(ds, "answer")
    top = {}
    for qt in dict.fromkeys(qtypes):
        top[qt] = Counter(a for q, a in zip(qtypes, answers) if q == qt).most_common(1)[0][0]
    return float(score_real(name, [top[q] for q in qtypes], ds)[get_spec(name).primary])


# ----------------------------------------------------------------------------------------------
# Loading


def _offline_switches() -> list[str]:
    return [k for k in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")
            if os.environ.get(k, "").strip().upper() in ("1", "ON", "YES", "TRUE")]


def _resolve_source(name: str, spec: RealBenchmark, source) -> Path | str:
    """A local folder (Path) or a hub id (str). Offline, a source that is no folder fails at once."""
    source = spec.hub_id if source is None else source
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ValueError(f"{name}: {source} is a file; pass the benchmark's folder (lmms-lab parquet layout or "
                         "save_to_disk)")
    switches = _offline_switches()
    if switches:
        raise FileNotFoundError(
            f"{name}: {str(source)!r} is not a local folder and {' and '.join(s + '=1' for s in switches)} forbid"
            f"{'s' if len(switches) == 1 else ''} the hub; pass a folder holding the benchmark (e.g. a download "
            f"of {spec.hub_id}), or unset {' and '.join(switches)} to download")
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", str(source)):
        raise FileNotFoundError(f"{name}: {source!r} is neither a folder nor a hub id (owner/name)")
    return str(source)


def _found(folder: Path) -> str:
    items = sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                   if p.suffix == ".parquet" or p.name in ("dataset_dict.json", "state.json"))
    if not items:
        items = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    return ", ".join(items[:12]) + (f" (+{len(items) - 12} more)" if len(items) > 12 else "") or "nothing"


def _load_local(name: str, folder: Path, config: str | None, split: str, single: bool, cache_dir):
    """One (config, split) table from a save_to_disk folder or the hub's parquet layout (see module docstring).

    `single`: the benchmark has one table, so `folder/` itself may hold it."""
    from datasets import load_dataset, load_from_disk

    what = f"split {split!r}" + (f" of config {config!r}" if config else "")
    roots = ([folder / config] if config else []) + ([folder] if single or not config else [])
    for root in roots:
        if (root / "dataset_dict.json").is_file():
            splits = json.loads((root / "dataset_dict.json").read_text()).get("splits", [])
            if split not in splits:
                raise ValueError(f"{name}: {root} (a saved DatasetDict) has no {what}; found splits {splits}")
            if not (root / split / "state.json").is_file():
                raise ValueError(f"{name}: missing file {root / split / 'state.json'} ({what} of the saved "
                                 f"DatasetDict in {root})")
            root = root / split
        elif (root / split / "state.json").is_file():
            root = root / split
        if (root / "state.json").is_file():
            try:
                return load_from_disk(str(root))
            except FileNotFoundError as e:
                raise ValueError(f"{name}: missing file in {root} ({what}): {e}") from None
    patterns = [f"{split}-*.parquet", f"{split}.parquet", f"{split}/*.parquet"]
    parquet_roots = ([folder / config] if config else []) + ([folder / "data", folder] if single else [])
    for root in parquet_roots:
        for pat in patterns:
            files = sorted(str(p) for p in root.glob(pat) if p.is_file())
            if files:
                return load_dataset("parquet", data_files=files, split="train", cache_dir=cache_dir)
    looked = ", ".join(str(r.relative_to(folder) / p) if r != folder else p for r in parquet_roots for p in patterns)
    raise ValueError(f"{name}: {folder} has no {what}: looked for a save_to_disk folder or parquet files "
                     f"{looked}; found {_found(folder)}")


def _load_table(name: str, where: Path | str, config: str | None, split: str, single: bool, cache_dir):
    if isinstance(where, Path):
        return _load_local(name, where, config, split, single, cache_dir)
    from datasets import load_dataset

    return load_dataset(where, config, split=split, cache_dir=cache_dir)


def _check_columns(name: str, ds, needed, where: str) -> None:
    missing = [c for c in needed if c not in ds.column_names]
    if missing:
        raise ValueError(f"{name}: {where} lacks columns {missing} of the lmms-lab schema; found columns "
                         f"{ds.column_names}")


def _subset(name: str, ds, limit: int | None, seed: int):
    """A seeded random subset of `limit` rows in the original order; MME keeps whole images (both questions)."""
    if limit is None or limit >= len(ds):
        return ds
    rng = np.random.default_rng(seed)
    if name == "mme":
        groups = _col(ds, "question_id")
        order = list(dict.fromkeys(groups))
        keep, n = set(), 0
        for k in rng.permutation(len(order)):
            size = groups.count(order[k])
            if n and n + size > limit:
                continue
            keep.add(order[k])
            n += size
            if n >= limit:
                break
        return ds.select([i for i, g in enumerate(groups) if g in keep])
    return ds.select(sorted(rng.permutation(len(ds))[:limit].tolist()))


def _cache_root(cache_dir) -> Path:
    import datasets

    return Path(cache_dir) if cache_dir else Path(datasets.config.HF_DATASETS_CACHE) / "studylib_real"


def load_real(name: str, source: str | Path | None = None, limit: int | None = None, seed: int = 0,
              cache_dir: str | Path | None = None):
    """Benchmark `name` as a `datasets.Dataset` of records (schema `real_features()`).

    `source`: a local folder (lmms-lab parquet layout or save_to_disk; see the module docstring) or a hub id
    (default: the benchmark's lmms-lab id). Offline (HF_DATASETS_OFFLINE / HF_HUB_OFFLINE), a source that is no
    folder fails at once, naming the switch. `limit`: a seeded random subset of that many rows (MME: whole
    images). Every record's question is "<image>\\n" + the LLaVA-1.5 prompt; `answer` is the gold answer (a
    letter for lettered choices; TextVQA's most frequent human answer, all 10 in `answers`).
    """
    spec = get_spec(name)
    if limit is not None and (not isinstance(limit, int) or limit <= 0):
        raise ValueError(f"limit must be a positive number of rows, got {limit!r}")
    where = _resolve_source(name, spec, source)
    from datasets import Image as HFImage

    single = spec.images is None
    ds = _load_table(name, where, spec.config, spec.split, single, cache_dir)
    _check_columns(name, ds, spec.columns, f"{where} ({spec.config or 'default'}/{spec.split})")
    ds = _subset(name, ds, limit, seed)
    parts = [ds._fingerprint]
    image_col = spec.image_column
    img_table, img_index = None, {}
    if spec.images is not None:
        img_table = _load_table(name, where, spec.images[0], spec.images[1], False, cache_dir)
        _check_columns(name, img_table, ("id", "image"), f"{where} ({spec.images[0]}/{spec.images[1]})")
        ids = [str(i) for i in _col(img_table, "id")]
        img_index = {k: i for i, k in enumerate(ids)}
        missing = sorted({str(i) for i in _col(ds, "imageId")} - set(img_index))
        if missing:
            raise ValueError(f"{name}: imageId {missing[:5]} of the questions not found in the image table "
                             f"{spec.images[0]}/{spec.images[1]} of {where}")
        img_table = img_table.cast_column("image", HFImage(decode=False))
        parts.append(img_table._fingerprint)
    else:
        ds = ds.cast_column(image_col, HFImage(decode=False))  # pass image bytes through, never re-encode

    def convert(row: dict, i: int) -> dict:
        rec = {"options": [], "answers": [], "group": "", "category": "", **spec.to_record(row, i)}
        image = img_table[img_index[str(row["imageId"])]]["image"] if img_table is not None else row[image_col]
        human = rec.pop("prompt")
        if image is not None:
            human = "<image>\n" + human
        rec.update(image=image, family=name, conversations=[{"from": "human", "value": human},
                                                            {"from": "gpt", "value": rec["answer"]}])
        return rec

    fp = files.key([LOADER_VERSION, name, parts, limit, seed], 16)
    cache = _cache_root(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    return ds.map(convert, with_indices=True, remove_columns=ds.column_names, features=real_features(),
                  new_fingerprint=fp, cache_file_name=str(cache / f"{name}-{fp}.arrow"), desc=f"records {name}")


def parse_sources(spec: str) -> dict[str, str | None]:
    """"pope=lmms-lab/POPE,gqa=/data/gqa,mme" -> {"pope": "lmms-lab/POPE", "gqa": "/data/gqa", "mme": None}
    (no source: the benchmark's lmms-lab hub id). Names are checked against `REAL_BENCHMARKS`."""
    out: dict[str, str | None] = {}
    for item in (x.strip() for x in str(spec).split(",")):
        if item:
            name, _, source = item.partition("=")
            out[name.strip()] = source.strip() or None
    if not out:
        raise ValueError(f"real benchmarks {spec!r}: expected NAME[=SOURCE],... with names from "
                         f"{', '.join(REAL_BENCHMARKS)}")
    D.check_names("real benchmark", list(out), list(REAL_BENCHMARKS))
    return out


def load_many(spec: str, limit: int | None = None, seed: int = 0, cache_dir=None) -> dict:
    """`load_real` for each NAME=SOURCE of `spec` (see `parse_sources`): {name: Dataset}."""
    return {name: load_real(name, source, limit, seed, cache_dir) for name, source in parse_sources(spec).items()}


def is_real(ds) -> bool:
    """True for records made by `load_real` (they carry the extra scoring columns of `real_features`)."""
    return {"options", "answers", "group"} <= set(ds.column_names)


# ----------------------------------------------------------------------------------------------
# Evaluation


def evaluate_real(model, processor, benchmarks: dict, model_name: str = "model", batch_size: int = 16,
                  max_new_tokens: dict[str, int] | None = None, blank_images: bool = False,
                  progress: bool = True):
    """Tidy table (columns model, benchmark, metric, score, n, chance, seconds) as
    `studylib.evaluation.evaluate`, for real benchmarks: `benchmarks` maps names of `REAL_BENCHMARKS` to
    datasets from `load_real`. Greedy answers by `generation.generate_answers` with each benchmark's token
    budget (`RealBenchmark.max_new_tokens`, or `max_new_tokens[name]`). `chance` is on the primary metric's row.
    Scores are fractions except MME's score_* / perception / cognition / total (points, see `score_mme`)."""
    import pandas as pd

    from .generation import generate_answers

    D.check_names("real benchmark", list(benchmarks), list(REAL_BENCHMARKS))
    rows = []
    for name, ds in benchmarks.items():
        spec = REAL_BENCHMARKS[name]
        budget = (max_new_tokens or {}).get(name, spec.max_new_tokens)
        t0 = time.perf_counter()
        preds = generate_answers(model, processor, ds, batch_size, max_new_tokens=budget,
                                   blank_images=blank_images, progress=progress)
        secs = time.perf_counter() - t0
        chance = chance_level(name, ds)
        for metric, score in score_real(name, preds, ds).items():
            rows.append({"model": model_name, "benchmark": name, "metric": metric, "score": float(score),
                         "n": len(ds), "chance": chance if metric == spec.primary else None, "seconds": secs,
                         "primary": metric == spec.primary})
    return pd.DataFrame(rows)
