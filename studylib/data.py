"""Embedded multimodal data: a seeded generator of images and LLaVA-format conversations.

Nothing can be downloaded here, so the study's "instruction data" and benchmarks are generated.
Every image is 32 x 32 pixels, split into a 2 x 2 grid of 16 x 16 cells; with the vision tower's
8-pixel patches, each cell is exactly 2 x 2 patches, so an object never straddles a patch boundary
in an arbitrary way. That alignment is what makes vision learnable from scratch in minutes on a CPU.

A record is a LLaVA conversation plus the fields the evaluator needs:

    {"id": "count-000012", "image": <PIL image or None>, "family": "count",
     "conversations": [{"from": "human", "value": "How many circles are there?\\n<image>"},
                       {"from": "gpt", "value": "2"}],
     "answer": "2", "qtype": "count-shape", "category": ""}

`qtype` groups questions whose answers share a distribution; a benchmark's chance level is the
accuracy of a blind guesser who knows that distribution (the most frequent answer per qtype).
The record's `datasets` schema and the reader of users' LLaVA JSON are in `llava_json`; turning records
into model inputs (prompts, tokenisation, collation) is `collate`.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
from PIL import Image, ImageDraw

from . import collate, files, llava_json
from . import validate as V

GENERATOR_VERSION = "9"
IMAGE_SIZE = 32
CELL = 16
CELLS = [(0, 0), (1, 0), (0, 1), (1, 1)]  # (column, row) in reading order
CELL_NAMES = ["top left", "top right", "bottom left", "bottom right"]
COLORS = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 90, 235),
    "yellow": (235, 215, 40),
    "purple": (160, 60, 210),
    "white": (235, 235, 235),
}
SHAPES = ["circle", "square", "triangle", "cross"]
OBJECT_TYPES = [(c, s) for c in COLORS for s in SHAPES]
# Zipf-like popularity: some objects are common in the data, which gives POPE its "popular" negatives.
_POP = 1.0 / np.arange(1, len(OBJECT_TYPES) + 1) ** 0.6
POPULARITY = _POP / _POP.sum()
SHAPE_POPULARITY = sorted(SHAPES, key=lambda sh: -sum(p for (c, s), p in zip(OBJECT_TYPES, POPULARITY) if s == sh))
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
LETTERS = "ABCDEF"

# 3 x 5 bitmap font for the OCR task (hand-written: 10 glyphs, drawn at 3x scale).
_FONT = {
    "0": ["111", "101", "101", "101", "111"], "1": ["010", "110", "010", "010", "111"],
    "2": ["111", "001", "111", "100", "111"], "3": ["111", "001", "111", "001", "111"],
    "4": ["101", "101", "111", "001", "001"], "5": ["111", "100", "111", "001", "111"],
    "6": ["111", "100", "111", "101", "111"], "7": ["111", "001", "010", "010", "010"],
    "8": ["111", "101", "111", "101", "111"], "9": ["111", "101", "111", "001", "111"],
}

FAMILIES = ["caption", "scene-qa", "pope", "count", "mcq", "ocr", "digits", "text-only", "multi"]
BENCHMARKS = list(V.BENCHMARKS)  # the names live in studylib.validate (the command line reads them there)
IMAGE_BENCHMARKS = [b for b in BENCHMARKS if b != "text-only"]
# Share of each family in the training mix ("instruction data"). Captions are the dense signal (and
# stage 1); "multi" conversations ask 2 scene questions about one image, as LLaVA's multi-turn data:
# the image is encoded once and every answer is supervised, so each step teaches more.
TRAIN_MIX = {"caption": 0.12, "scene-qa": 0.05, "pope": 0.05, "count": 0.05, "mcq": 0.05, "multi": 0.40,
             "ocr": 0.12, "digits": 0.06, "text-only": 0.10}
MULTI_TURN_MIX = {"caption": 0.10, "scene-qa": 0.25, "pope": 0.25, "count": 0.15, "mcq": 0.25}
# Disjoint seed streams: the same user seed never yields the same stream for train and a benchmark.
_SPLIT_CODE = {"train": 1, **{b: 100 + i for i, b in enumerate(BENCHMARKS)}}


def check_names(kind: str, names: Iterable[str], valid: list[str]) -> list[str]:
    """Raise a ValueError naming the parameter and the valid values for any unknown name."""
    names = list(names)
    bad = [n for n in names if n not in valid]
    if bad:
        raise ValueError(f"unknown {kind} {bad}; valid {kind}s are: {', '.join(valid)}")
    return names


# ----------------------------------------------------------------------------------------------
# Rendering


@dataclass(frozen=True)
class Obj:
    color: str
    shape: str
    cell: int  # 0..3, reading order

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], rgb) -> None:
    x0, y0, x1, y1 = box
    if shape == "circle":
        draw.ellipse(box, fill=rgb)
    elif shape == "square":
        draw.rectangle(box, fill=rgb)
    elif shape == "triangle":
        draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=rgb)
    elif shape == "cross":
        w = (x1 - x0) // 3
        draw.rectangle((x0 + w, y0, x1 - w, y1), fill=rgb)
        draw.rectangle((x0, y0 + w, x1, y1 - w), fill=rgb)
    else:
        raise ValueError(f"unknown shape {shape!r}; valid shapes are: {', '.join(SHAPES)}")


def render_scene(objects: list[Obj], rng: np.random.Generator) -> Image.Image:
    """Draw each object inside its 16 x 16 cell (size 11-14 px, jitter of a pixel)."""
    img = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (0, 0, 0))
    draw = ImageDraw.Draw(img)
    for o in objects:
        cx, cy = CELLS[o.cell]
        size = int(rng.integers(11, 15))
        off = (CELL - size) // 2
        jx, jy = (int(v) for v in rng.integers(-1, 2, size=2))
        x0 = cx * CELL + off + jx
        y0 = cy * CELL + off + jy
        draw_shape(draw, o.shape, (x0, y0, x0 + size - 1, y0 + size - 1), COLORS[o.color])
    return img


def render_text(text: str, rng: np.random.Generator) -> Image.Image:
    """Draw up to four digits, one per cell in reading order, with the 3 x 5 font at 3x scale."""
    img = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (0, 0, 0))
    px = img.load()
    color = COLORS[["white", "yellow", "green"][int(rng.integers(3))]]
    for i, ch in enumerate(text):
        cx, cy = CELLS[i]
        x0 = cx * CELL + 3 + int(rng.integers(-1, 2))
        y0 = cy * CELL + 1
        for r, row in enumerate(_FONT[ch]):
            for c, bit in enumerate(row):
                if bit == "1":
                    for dy in range(3):
                        for dx in range(3):
                            px[x0 + 3 * c + dx, y0 + 3 * r + dy] = color
    return img


_DIGITS: tuple[np.ndarray, np.ndarray] | None = None


def sklearn_digits(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Real handwritten digits (scikit-learn, 8 x 8): a fixed 1197 / 600 split into train / benchmark."""
    global _DIGITS
    if _DIGITS is None:
        from sklearn.datasets import load_digits

        d = load_digits()
        _DIGITS = (d.images, d.target)
    images, target = _DIGITS
    order = np.random.default_rng(12345).permutation(len(target))
    idx = order[:1197] if split == "train" else order[1197:]
    return images[idx], target[idx]


def digit_image(pixels8: np.ndarray) -> Image.Image:
    """Upsample an 8 x 8 digit (values 0-16) to 32 x 32 grey RGB (nearest neighbour, 4x)."""
    a = (pixels8 * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    a = np.kron(a, np.ones((4, 4), dtype=np.uint8))
    return Image.fromarray(np.stack([a, a, a], axis=-1))


# ----------------------------------------------------------------------------------------------
# Question families. A scene question takes the scene's objects and returns (question, answer, qtype,
# category), or None when the scene admits no such question; the image is drawn once per conversation.


def random_scene(rng: np.random.Generator, n_min: int = 1, n_max: int = 4) -> list[Obj]:
    n = int(rng.integers(n_min, n_max + 1))
    cells = rng.choice(4, size=n, replace=False)
    kinds = rng.choice(len(OBJECT_TYPES), size=n, p=POPULARITY)
    return sorted(
        (Obj(OBJECT_TYPES[k][0], OBJECT_TYPES[k][1], int(c)) for k, c in zip(kinds, cells)),
        key=lambda o: o.cell,
    )


def q_caption(rng, objs):
    q = ["Describe the image.", "What is in the image?", "List the objects and where they are."]
    return str(rng.choice(q)), "; ".join(f"{o.name} at {CELL_NAMES[o.cell]}" for o in objs) + ".", "caption", ""


def _neighbour(cell: int, relation: str) -> int | None:
    col, row = CELLS[cell]
    dc, dr = {"left of": (-1, 0), "right of": (1, 0), "above": (0, -1), "below": (0, 1)}[relation]
    target = (col + dc, row + dr)
    return CELLS.index(target) if target in CELLS else None


def q_scene(rng, objs):
    """GQA-like: an attribute of the object at a position, of a uniquely described object, or of its
    neighbour; or where a uniquely described object is (grounding, as RefCOCO in LLaVA's mix)."""
    kind = int(rng.integers(5))
    o = objs[int(rng.integers(len(objs)))]
    if kind == 4:
        if sum(p.name == o.name for p in objs) > 1:
            return None
        return f"Where is the {o.name}?", CELL_NAMES[o.cell], "where", ""
    if kind == 0:
        if int(rng.integers(2)):
            return f"What color is the object at the {CELL_NAMES[o.cell]}?", o.color, "color", ""
        return f"What shape is at the {CELL_NAMES[o.cell]}?", o.shape, "shape", ""
    if kind == 1:
        if sum(p.shape == o.shape for p in objs) == 1:
            return f"What color is the {o.shape}?", o.color, "color", ""
        if sum(p.color == o.color for p in objs) == 1:
            return f"What shape is the {o.color} object?", o.shape, "shape", ""
        return None
    pairs = [(o, p, rel) for o in objs for p in objs for rel in ("left of", "right of", "above", "below")
             if _neighbour(o.cell, rel) == p.cell and sum(x.name == o.name for x in objs) == 1]
    if not pairs:
        return None
    o, p, rel = pairs[int(rng.integers(len(pairs)))]
    if kind == 2:
        return f"What shape is {rel} the {o.name}?", p.shape, "shape", ""
    return f"What color is the object {rel} the {o.name}?", p.color, "color", ""


def q_pope(rng, objs, category: str | None = None):
    """POPE: 'Is there a <object> in the image?'; half the yes/no pairs name a shape (the object category),
    half a coloured shape. Negatives: random (any absent object), popular (the most frequent absent objects
    of the data) or adversarial (a coloured shape that shares its colour or its shape with one in the image).
    """
    category = category or str(rng.choice(["random", "popular", "adversarial"]))
    by_shape = category != "adversarial" and int(rng.integers(2)) == 1
    answer = "yes" if int(rng.integers(2)) else "no"
    if by_shape:
        present = [o.shape for o in objs]
        absent = [sh for sh in SHAPE_POPULARITY if sh not in present]
        if answer == "yes" or not absent:
            name, answer = present[int(rng.integers(len(present)))], "yes"
        else:
            name = absent[0] if category == "popular" else absent[int(rng.integers(len(absent)))]
        return f"Is there a {name} in the image?", answer, "pope", category
    present_names = {o.name for o in objs}
    if answer == "yes":
        return f"Is there a {objs[int(rng.integers(len(objs)))].name} in the image?", "yes", "pope", category
    absent = [f"{c} {sh}" for c, sh in OBJECT_TYPES if f"{c} {sh}" not in present_names]
    if category == "popular":
        cands = absent[:3]
    elif category == "adversarial":
        cands = [n for n in absent if any(n.split()[0] == o.color or n.split()[1] == o.shape for o in objs)]
    else:
        cands = absent
    return f"Is there a {cands[int(rng.integers(len(cands)))]} in the image?", "no", "pope", category


def pope_reply(question: str, answer: str) -> str:
    """The teacher's reply to a POPE question: the object it found, then "yes" ("red circle, yes"), or "no".

    The benchmark's answer stays "yes"/"no"; `evaluation.parse_yes_no` reads the first "yes"/"no" word of the
    reply (as POPE's own rule, which reads "no" in the first sentence, would). Why name the object: a bare
    "yes"/"no" was never learned here (it stayed at its prior through every variant tried; README, "POPE: why
    the reply names the object"): its one token must compare the question's object with the image, and neither
    alone predicts it. Our reading of why naming works: the first token's logit for an object word is then the
    LM's copy of that word from the question plus the image's evidence for it, both learned directly (copying;
    presence, as in captions), and "no" wins when the copy alone is not enough. 500 finetuning steps of the
    previous teacher on such replies took POPE from 0.52 to 0.84 (`experiments/pope/name_first.py`);
    the teacher trained from scratch on them scores 0.78.
    """
    if answer == "no":
        return "no"
    name = question.removeprefix("Is there a ").removesuffix(" in the image?")
    return f"{name}, yes"


def q_count(rng, objs):
    kind = int(rng.integers(3))
    if kind == 0:
        return "How many objects are there?", str(len(objs)), "count-all", ""
    if kind == 1:
        s = str(rng.choice(SHAPES))
        return f"How many {s}s are there?", str(sum(o.shape == s for o in objs)), "count-shape", ""
    c = str(rng.choice(list(COLORS)))
    return f"How many {c} objects are there?", str(sum(o.color == c for o in objs)), "count-color", ""


def q_mcq(rng, objs):
    """ScienceQA/MMMU-like: lettered options, the answer is a letter. Options are listed in a fixed order
    (all four shapes, or all six colours), as in exams whose choices are sorted."""
    o = objs[int(rng.integers(len(objs)))]
    if int(rng.integers(2)):
        q, right, options = f"Which color is the shape at the {CELL_NAMES[o.cell]}?", o.color, list(COLORS)
    else:
        q, right, options = f"Which shape is at the {CELL_NAMES[o.cell]}?", o.shape, SHAPES
    opts = " ".join(f"{LETTERS[i]}. {x}" for i, x in enumerate(options))
    return f"{q} {opts} Answer with the option's letter.", LETTERS[options.index(right)], "mcq-" + q.split()[1], ""


SCENE_QUESTIONS: dict[str, Callable] = {
    "caption": q_caption, "scene-qa": q_scene, "pope": q_pope, "count": q_count, "mcq": q_mcq,
}


def gen_ocr(rng):
    n = int(rng.integers(2, 5))
    text = "".join(str(int(d)) for d in rng.integers(0, 10, size=n))
    q = str(rng.choice(["What number is written in the image?", "Read the text in the image."]))
    return render_text(text, rng), [(q, text, "ocr", "")]


def gen_digits(rng, split: str = "train"):
    images, target = sklearn_digits(split)
    i = int(rng.integers(len(target)))
    return digit_image(images[i]), [("Which digit is this?", str(int(target[i])), "digits", "")]


def gen_text_only(rng):
    """A language task with no image: small-number arithmetic in words or digits."""
    a, b = (int(x) for x in rng.integers(0, 10, size=2))
    if int(rng.integers(2)):
        return None, [(f"What is {a} plus {b}?", str(a + b), "add", "")]
    return None, [(f"What number comes after {NUMBER_WORDS[a]}?", str(a + 1), "next", "")]


def gen_scene(rng, families: list[str], category: str | None = None):
    """One scene and one question per family in `families` (a multi-turn conversation when several).

    A question the scene does not admit, or one already asked, is dropped (up to 5 tries each); a scene
    that admits none of the questions is redrawn.
    """
    while True:
        objs = random_scene(rng)
        turns: list[tuple] = []
        for f in families:
            for _ in range(5):
                qa = q_pope(rng, objs, category) if f == "pope" else SCENE_QUESTIONS[f](rng, objs)
                if qa is not None and qa[0] not in [t[0] for t in turns]:
                    turns.append(qa)
                    break
        if turns:
            return render_scene(objs, rng), turns


def make_record(family: str, rng: np.random.Generator, idx: int, split: str) -> dict[str, Any]:
    """One LLaVA record. Family "multi" is a scene with 2 turns of scene questions (training only)."""
    if family == "digits":
        image, turns = gen_digits(rng, "train" if split == "train" else "test")
    elif family == "ocr":
        image, turns = gen_ocr(rng)
    elif family == "text-only":
        image, turns = gen_text_only(rng)
    elif family == "multi":
        k = 2
        names = list(MULTI_TURN_MIX)
        picks = rng.choice(len(names), size=k, p=list(MULTI_TURN_MIX.values()))
        image, turns = gen_scene(rng, [names[i] for i in picks])
    else:  # benchmarks: POPE in balanced random / popular / adversarial thirds
        cat = ["random", "popular", "adversarial"][idx % 3] if family == "pope" and split != "train" else None
        image, turns = gen_scene(rng, [family], cat)
    conv = []
    for i, (q, a, qtype, _) in enumerate(turns):
        human = llava_json.image_question(q) if image is not None and i == 0 else q
        reply = pope_reply(q, a) if qtype == "pope" else a
        conv += [{"from": "human", "value": human}, {"from": "gpt", "value": reply}]
    _, answer, qtype, category = turns[0]
    return {"id": f"{family}-{idx:06d}", "image": image, "family": family, "conversations": conv,
            "answer": answer, "qtype": qtype, "category": category}


def generate_records(split: str, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """`split` is "train" (the mix of all families) or a benchmark name. Deterministic in (split, n, seed)."""
    check_names("split", [split], ["train"] + BENCHMARKS)
    rng = np.random.default_rng([seed, _SPLIT_CODE[split]])
    if split == "train":
        counts = {f: int(round(share * n)) for f, share in TRAIN_MIX.items()}
        counts["multi"] += n - sum(counts.values())
        families = [f for f, k in counts.items() for _ in range(k)]
        families = [families[i] for i in rng.permutation(len(families))]
    else:
        families = [split] * n
    return [make_record(f, rng, i, split) for i, f in enumerate(families)]


def sample_records(n: int = 2000, seed: int = 0) -> list[dict[str, Any]]:
    """A sample of every family's text: `n` training records and 100 of each benchmark (what the embedded
    tokenizer is trained on and what the pretrained preset's vocabulary is trimmed to)."""
    return [r for split in ["train"] + BENCHMARKS for r in generate_records(split, n if split == "train" else 100, seed)]


def template_pieces(n: int = 2000, seed: int = 0) -> list[str]:
    """The strings `collate.encode` tokenizes for `sample_records(n, seed)`, in order and with repeats: each prompt
    in the chat template ("USER: ... ASSISTANT:") split at its `<image>` placeholder, and " " + each answer.
    (What the embedded tokenizer is trained on, and, as a set, what the pretrained vocabulary is trimmed to.)"""
    pieces = []
    for r in sample_records(n, seed):
        conv = r["conversations"]
        for human, gpt in zip(conv[0::2], conv[1::2]):
            pieces += [p for p in collate.prompt_text(human["value"]).split("<image>") if p]
            pieces.append(" " + gpt["value"])
    return pieces


# ----------------------------------------------------------------------------------------------
# datasets.Dataset materialisation and cache


def default_cache_dir() -> Path:
    """$STUDYLIB_CACHE, else data/cache in the project home (`files.home`)."""
    return Path(os.environ.get("STUDYLIB_CACHE") or files.home() / "data" / "cache")


def build_dataset(split: str, n: int, seed: int = 0, cache_dir: str | Path | None = None):
    """Generate (or load from the on-disk cache) a split as a `datasets.Dataset` with an Image feature.

    The cache key is (generator version, split, n, seed); the same key gives the same fingerprint.
    """
    from datasets import Dataset, load_from_disk

    check_names("split", [split], ["train"] + BENCHMARKS)
    if n <= 0:
        raise ValueError(f"n must be a positive number of examples, got {n}")
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    path = cache / f"v{GENERATOR_VERSION}-{split}-n{n}-s{seed}"
    if (path / "dataset_info.json").exists():
        try:
            return load_from_disk(str(path))
        except (OSError, ValueError) as e:  # a damaged cache (e.g. a truncated arrow file) is made again
            aside = path.with_name(f"{path.name}.damaged{os.getpid()}")
            path.rename(aside)
            print(f"data cache {path} does not load ({type(e).__name__}); moved to {aside.name} and regenerated")
    recs = generate_records(split, n, seed)
    ds = Dataset.from_list(recs, features=llava_json.features())
    fp = files.key({"generator": GENERATOR_VERSION, "split": split, "n": n, "seed": seed}, 16)
    ds._fingerprint = fp  # deterministic across processes (datasets would otherwise hash the pickled list)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    ds.save_to_disk(str(tmp))
    try:
        tmp.rename(path)  # atomic: a partial cache is never read
    except OSError:  # another process won the race
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return load_from_disk(str(path))


def chance_level(ds) -> float:
    """Blind-guesser accuracy: per question type, always answer that type's most frequent answer."""
    by_type: dict[str, Counter] = {}
    for qt, a in zip(ds["qtype"], ds["answer"]):
        by_type.setdefault(qt, Counter())[a] += 1
    hits = sum(c.most_common(1)[0][1] for c in by_type.values())
    return hits / len(ds)
