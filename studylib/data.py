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
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
from PIL import Image, ImageDraw

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


def image_question(question: str) -> str:
    """The first human turn of an embedded record: the question, then the image ("{question}\\n<image>").

    LLaVA-1.5 puts the image first. The embedded records put the question first, so that the language model
    reads every image token already knowing what is asked (a causal LM cannot look ahead). Both orders are
    LLaVA format (mix-665k holds both). Measured together with the templated tokenizer, the teacher gained on
    every image benchmark but POPE (mcq 0.67 -> 0.99, digits 0.69 -> 0.81); POPE needed `pope_reply` (README,
    "POPE: why the reply names the object")."""
    return f"{question}\n<image>"


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
        human = image_question(q) if image is not None and i == 0 else q
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
    """The strings `encode` tokenizes for `sample_records(n, seed)`, in order and with repeats: each prompt in
    the chat template ("USER: ... ASSISTANT:") split at its `<image>` placeholder, and " " + each answer.
    (What the embedded tokenizer is trained on, and, as a set, what the pretrained vocabulary is trimmed to.)"""
    pieces = []
    for r in sample_records(n, seed):
        conv = r["conversations"]
        for human, gpt in zip(conv[0::2], conv[1::2]):
            pieces += [p for p in prompt_text(human["value"]).split("<image>") if p]
            pieces.append(" " + gpt["value"])
    return pieces


# ----------------------------------------------------------------------------------------------
# datasets.Dataset materialisation and cache


def features():
    from datasets import Features, Image as HFImage, Value

    turn = {"from": Value("string"), "value": Value("string")}
    return Features({
        "id": Value("string"), "image": HFImage(), "family": Value("string"),
        "conversations": [turn], "answer": Value("string"), "qtype": Value("string"),
        "category": Value("string"),
    })


def default_cache_dir() -> Path:
    return Path(os.environ.get("STUDYLIB_CACHE", Path(__file__).resolve().parent.parent / "data" / "cache"))


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
    ds = Dataset.from_list(recs, features=features())
    fp = hashlib.sha256(f"studylib-data v{GENERATOR_VERSION} {split} {n} {seed}".encode()).hexdigest()[:16]
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


# ----------------------------------------------------------------------------------------------
# User data: LLaVA-format JSON / JSONL plus an image folder


def _llava_rows(path: Path) -> list[dict]:
    if not path.is_file():
        raise FileNotFoundError(f"LLaVA data {path}: {'is a folder, not a file' if path.is_dir() else 'no such file'}")
    try:
        text = path.read_text()
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not a UTF-8 text file ({e}); expected LLaVA JSON or JSONL") from None
    if path.suffix == ".jsonl":
        rows = []
        for i, line in enumerate(text.splitlines()):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}: line {i + 1} is not valid JSON ({e})") from None
        return rows
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); expected a list of LLaVA records (or .jsonl)") from None
    if not isinstance(rows, list):
        raise ValueError(f"{path}: expected a JSON list of LLaVA records, got {type(rows).__name__}")
    return rows


def read_image(folder: Path, name, where: str) -> Image.Image:
    """The RGB image `folder / name` of a LLaVA row. `name` must be a relative path inside `folder` (as in
    mix-665k: "coco/train2017/000000033471.jpg"); an absolute path, one that climbs out with "..", a missing
    file or one that does not decode as an image is a ValueError naming the row and the file."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{where}: 'image' must be a file name relative to the image folder; got {name!r}")
    if Path(name).is_absolute() or ".." in Path(name).parts:
        raise ValueError(f"{where}: image {name!r} must be a relative path inside the image folder {folder} "
                         "(no absolute path, no '..'); pass --image-folder to say where the images are")
    ipath = folder / name
    if not ipath.is_file():
        raise ValueError(f"missing image {ipath} for {where}")
    try:
        with Image.open(ipath) as im:
            return im.convert("RGB")
    except (OSError, SyntaxError, ValueError) as e:  # PIL: UnidentifiedImageError (an OSError), truncated data
        raise ValueError(f"image {ipath} for {where} does not decode ({type(e).__name__}: {e})") from None


def load_llava_json(path: str | Path, image_folder: str | Path | None = None):
    """Read LLaVA-format records (as in llava_v1_5_mix665k.json) into the same Dataset schema.

    Multi-turn conversations are kept (turns must alternate human, gpt). A malformed row or a missing image raises a ValueError naming the row id and the file.
    """
    from datasets import Dataset

    path = Path(path)
    folder = Path(image_folder) if image_folder else path.parent
    out = []
    for i, row in enumerate(_llava_rows(path)):
        rid = row.get("id", f"#{i}") if isinstance(row, dict) else f"#{i}"
        where = f"row id={rid!r} in {path}"
        conv = row.get("conversations") if isinstance(row, dict) else None
        if (not isinstance(conv, list) or len(conv) < 2 or len(conv) % 2
                or not all(isinstance(t, dict) and isinstance(t.get("value"), str) for t in conv)
                or [t.get("from") for t in conv] != ["human", "gpt"] * (len(conv) // 2)):
            raise ValueError(f"malformed {where}: expected 'conversations' alternating human and gpt turns "
                             "with string values")
        image = read_image(folder, row.get("image"), where) if row.get("image") not in (None, "") else None
        first = conv[0]["value"]
        turns = [{"from": t["from"], "value": t["value"].replace("<image>\n", "").replace("\n<image>", "").replace("<image>", "")}
                 for t in conv]
        if image is not None:  # one image placeholder in the first question: where the row put it (at its end,
            # as the embedded records, or at its start), else at the start (LLaVA-1.5); none in later turns
            at_end = first.rstrip().endswith("<image>") and not first.lstrip().startswith("<image>")
            turns[0]["value"] = image_question(turns[0]["value"]) if at_end else "<image>\n" + turns[0]["value"]
        answer = turns[1]["value"]
        out.append({"id": str(rid), "image": image, "family": row.get("family", "user"),
                    "conversations": turns, "answer": answer, "qtype": row.get("qtype", "user"), "category": row.get("category", "")})
    if not out:
        raise ValueError(f"{path} holds no records")
    return Dataset.from_list(out, features=features())


def save_llava_json(ds, out_dir: str | Path) -> Path:
    """Write a Dataset as LLaVA JSON plus an image folder (the inverse of `load_llava_json`)."""
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for r in ds:
        row = {"id": r["id"], "conversations": r["conversations"], "family": r["family"],
               "qtype": r["qtype"], "category": r["category"]}
        if r["image"] is not None:
            row["image"] = f"images/{r['id']}.png"
            r["image"].save(out_dir / row["image"])
        rows.append(row)
    path = out_dir / "data.json"
    path.write_text(json.dumps(rows))
    return path


# ----------------------------------------------------------------------------------------------
# From records to model inputs (LLaVA-1.5 prompt: "USER: <image>\n{question} ASSISTANT: {answer}</s>")


LLAVA_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
                "The assistant gives helpful, detailed, and polite answers to the user's questions.")


def system_prompt(processor) -> str:
    """The system sentence that starts a conversation: Bunny's (its chat template carries it), else none
    (the embedded models, and llava-hf's LLaVA-1.5 template, which has no default system prompt)."""
    return LLAVA_SYSTEM if LLAVA_SYSTEM in (getattr(processor, "chat_template", None) or "") else ""


def prompt_text(human: str, system: str = "") -> str:
    """First-turn prompt: "[system ]USER: <image>\n{question} ASSISTANT:" (LLaVA-1.5 / Bunny format)."""
    return f"{system} USER: {human} ASSISTANT:" if system else f"USER: {human} ASSISTANT:"


def special_prefix(tokenizer) -> list[int]:
    """The ids a tokenizer puts before any text by itself (Llama's and Gemma's <bos>; none for the embedded BPE)."""
    plain = tokenizer("x", add_special_tokens=False)["input_ids"]
    full = tokenizer("x")["input_ids"]
    start = next((i for i in range(len(full)) if full[i:i + len(plain)] == plain), 0)
    return full[:start]


def encode(example: dict, processor, n_image_tokens: int) -> dict:
    """input_ids = the tokenizer's own prefix (<bos>, if any), then for each turn: prompt + answer + </s>; labels = -100 on prompts (and image tokens), ids on answers.

    Multi-turn follows LLaVA-1.5: "USER: <image>\\nq1 ASSISTANT: a1</s>USER: q2 ASSISTANT: a2</s>".
    The `<image>` placeholder is expanded to `n_image_tokens` copies, exactly as `LlavaProcessor` does.
    """
    tok = processor.tokenizer
    ids: list[int] = special_prefix(tok)  # e.g. <bos>: what the processor adds at evaluation
    labels: list[int] = [-100] * len(ids)
    conv = example["conversations"]
    system = system_prompt(processor)
    for turn, (human, gpt) in enumerate(zip(conv[0::2], conv[1::2])):
        prompt = prompt_text(human["value"], system if turn == 0 else "").replace("<image>", "<image>" * n_image_tokens)
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        a_ids = tok(" " + gpt["value"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        ids += p_ids + a_ids
        labels += [-100] * len(p_ids) + a_ids
    return {"input_ids": ids, "labels": labels}


def num_image_tokens(processor) -> int:
    """Image tokens per image: (size / patch)^2 + extra tokens, minus the CLS token for the "default" strategy."""
    ip = processor.image_processor
    size = ip.crop_size["height"] if getattr(ip, "do_center_crop", False) else ip.size.get("height", ip.size.get("shortest_edge"))
    n = (size // processor.patch_size) ** 2 + processor.num_additional_image_tokens
    return n - 1 if processor.vision_feature_select_strategy == "default" else n


def tokenize_dataset(ds, processor, max_length: int | None = None):
    """Add `input_ids` and `labels` columns (images stay as images; the collator normalises them).

    max_length: token limit per example; None = 240 text tokens + the image tokens (256 for the embedded
    models' 16; 816 for LLaVA-1.5's 576, 969 for Bunny's 729)."""
    n = num_image_tokens(processor)
    max_length = max_length or 240 + n
    out = ds.map(lambda ex: encode(ex, processor, n), desc="tokenize")
    too_long = [i for i, ids in zip(out["id"], out["input_ids"]) if len(ids) > max_length]
    if too_long:
        raise ValueError(f"{len(too_long)} examples exceed max_length={max_length} tokens (first: {too_long[0]})")
    return out


class Collator:
    """Right-pad `input_ids` / `labels` and turn images into `pixel_values` with the processor's image
    processor. Text-only examples get no pixels; a batch mixing both is valid for LLaVA (image tokens
    are only where `<image>` was)."""

    def __init__(self, processor):
        self.processor = processor
        self.pad = processor.tokenizer.pad_token_id

    def __call__(self, batch: list[dict]) -> dict:
        n = max(len(b["input_ids"]) for b in batch)
        ids = torch.full((len(batch), n), self.pad, dtype=torch.long)
        labels = torch.full((len(batch), n), -100, dtype=torch.long)
        mask = torch.zeros((len(batch), n), dtype=torch.long)
        for i, b in enumerate(batch):
            k = len(b["input_ids"])
            ids[i, :k] = torch.tensor(b["input_ids"])
            labels[i, :k] = torch.tensor(b["labels"])
            mask[i, :k] = 1
        out = {"input_ids": ids, "attention_mask": mask, "labels": labels}
        return self.add_pixels(out, batch)

    def add_pixels(self, out: dict, batch: list[dict]) -> dict:
        """`out` plus the batch's images as `pixel_values`, in batch order (none for text-only batches)."""
        images = [b["image"].convert("RGB") for b in batch if b.get("image") is not None]
        if images:
            out["pixel_values"] = self.processor.image_processor(images, return_tensors="pt")["pixel_values"]
        return out


def pack_rows(lengths: list[int], capacity: int) -> list[list[int]]:
    """First-fit decreasing: indices of examples grouped into rows of at most max(capacity, longest) tokens."""
    capacity = max([capacity, *lengths])
    rows: list[list[int]] = []
    free: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        r = next((r for r in range(len(rows)) if free[r] >= lengths[i]), None)
        if r is None:
            rows.append([])
            free.append(capacity)
            r = len(rows) - 1
        rows[r].append(i)
        free[r] -= lengths[i]
    return rows


class PackingCollator(Collator):
    """Padding-free batches: the batch's examples are packed into rows of about `capacity` tokens
    (`pack_rows`), and each example's position ids restart at 0. Without an attention mask, transformers
    reads the restarting position ids as packed sequences and builds a block-diagonal causal mask, so each
    example attends only to itself: the loss is the padded batch's (tested), on far fewer tokens (here a
    batch of 32 averages 43 tokens per example but pads to ~86).

    Written here because `transformers.DataCollatorWithFlattening` packs a whole batch into one row: exact
    too, but on CPU the attention over one ~2,000-token row costs more than the padding saves
    (`python benchmarks/bench_packing.py --capacities 160,100000` compares them)."""

    def __init__(self, processor, capacity: int = 160):
        super().__init__(processor)
        self.capacity = capacity

    def __call__(self, batch: list[dict]) -> dict:
        rows = pack_rows([len(b["input_ids"]) for b in batch], self.capacity)
        width = max(sum(len(batch[i]["input_ids"]) for i in row) for row in rows)
        ids = torch.full((len(rows), width), self.pad, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        positions = torch.zeros((len(rows), width), dtype=torch.long)
        for r, row in enumerate(rows):
            k = 0
            for i in row:
                b = batch[i]
                n = len(b["input_ids"])
                ids[r, k:k + n] = torch.tensor(b["input_ids"])
                labels[r, k:k + n] = torch.tensor(b["labels"])
                positions[r, k:k + n] = torch.arange(n)
                k += n
            positions[r, k:] = torch.arange(width - k)  # the tail of padding is one more (ignored) sequence
        out = {"input_ids": ids, "position_ids": positions, "labels": labels, "use_cache": False}
        # image features fill the <image> tokens in reading order: row by row, example by example
        return self.add_pixels(out, [batch[i] for row in rows for i in row])
