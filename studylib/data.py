"""Embedded multimodal data: a seeded generator of images and LLaVA-format conversations.

Nothing can be downloaded here, so the study's "instruction data" and benchmarks are generated.
Every image is 32 x 32 pixels, split into a 2 x 2 grid of 16 x 16 cells; with the vision tower's
8-pixel patches, each cell is exactly 2 x 2 patches, so an object never straddles a patch boundary
in an arbitrary way. That alignment is what makes vision learnable from scratch in minutes on a CPU.

A record is a LLaVA conversation plus the fields the evaluator needs:

    {"id": "count-000012", "image": <PIL image or None>, "family": "count",
     "conversations": [{"from": "human", "value": "<image>\\nHow many circles are there?"},
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
from PIL import Image, ImageDraw

GENERATOR_VERSION = "3"
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
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
LETTERS = "ABCD"

# 3 x 5 bitmap font for the OCR task (hand-written: 10 glyphs, drawn at 3x scale).
_FONT = {
    "0": ["111", "101", "101", "101", "111"], "1": ["010", "110", "010", "010", "111"],
    "2": ["111", "001", "111", "100", "111"], "3": ["111", "001", "111", "001", "111"],
    "4": ["101", "101", "111", "001", "001"], "5": ["111", "100", "111", "001", "111"],
    "6": ["111", "100", "111", "101", "111"], "7": ["111", "001", "010", "010", "010"],
    "8": ["111", "101", "111", "101", "111"], "9": ["111", "101", "111", "001", "111"],
}

FAMILIES = ["caption", "scene-qa", "pope", "count", "mcq", "ocr", "digits", "text-only"]
BENCHMARKS = ["scene-qa", "pope", "count", "mcq", "ocr", "digits", "text-only"]
IMAGE_BENCHMARKS = [b for b in BENCHMARKS if b != "text-only"]
# Share of each family in the training mix ("instruction data"); captions are the dense signal.
TRAIN_MIX = {"caption": 0.22, "scene-qa": 0.16, "pope": 0.12, "count": 0.12, "mcq": 0.10,
             "ocr": 0.12, "digits": 0.06, "text-only": 0.10}
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
# Question families. Each returns (image, question, answer, qtype, category).


def random_scene(rng: np.random.Generator, n_min: int = 1, n_max: int = 4) -> list[Obj]:
    n = int(rng.integers(n_min, n_max + 1))
    cells = rng.choice(4, size=n, replace=False)
    kinds = rng.choice(len(OBJECT_TYPES), size=n, p=POPULARITY)
    return sorted(
        (Obj(OBJECT_TYPES[k][0], OBJECT_TYPES[k][1], int(c)) for k, c in zip(kinds, cells)),
        key=lambda o: o.cell,
    )


def caption(objs: list[Obj]) -> str:
    return "; ".join(f"{o.name} at {CELL_NAMES[o.cell]}" for o in objs) + "."


def gen_caption(rng):
    objs = random_scene(rng)
    q = ["Describe the image.", "What is in the image?", "List the objects and where they are."]
    return render_scene(objs, rng), str(rng.choice(q)), caption(objs), "caption", ""


def _neighbour(cell: int, relation: str) -> int | None:
    col, row = CELLS[cell]
    dc, dr = {"left of": (-1, 0), "right of": (1, 0), "above": (0, -1), "below": (0, 1)}[relation]
    target = (col + dc, row + dr)
    return CELLS.index(target) if target in CELLS else None


def gen_scene_qa(rng):
    """GQA-like: attributes of a uniquely described object, or of its neighbour."""
    for _ in range(100):
        objs = random_scene(rng)
        kind = int(rng.integers(4))
        if kind < 2:  # attribute of the object at a position, or of a unique shape/colour
            o = objs[int(rng.integers(len(objs)))]
            if kind == 0:
                if int(rng.integers(2)):
                    q, a, qt = f"What color is the object at the {CELL_NAMES[o.cell]}?", o.color, "color"
                else:
                    q, a, qt = f"What shape is at the {CELL_NAMES[o.cell]}?", o.shape, "shape"
            else:
                if sum(p.shape == o.shape for p in objs) == 1:
                    q, a, qt = f"What color is the {o.shape}?", o.color, "color"
                elif sum(p.color == o.color for p in objs) == 1:
                    q, a, qt = f"What shape is the {o.color} object?", o.shape, "shape"
                else:
                    continue
        else:  # relation: what is <relation> the <unique object>?
            pairs = [(o, p, rel) for o in objs for p in objs for rel in ("left of", "right of", "above", "below")
                     if _neighbour(o.cell, rel) == p.cell and sum(x.name == o.name for x in objs) == 1]
            if not pairs:
                continue
            o, p, rel = pairs[int(rng.integers(len(pairs)))]
            if kind == 2:
                q, a, qt = f"What shape is {rel} the {o.name}?", p.shape, "shape"
            else:
                q, a, qt = f"What color is the object {rel} the {o.name}?", p.color, "color"
        return render_scene(objs, rng), q, a, qt, ""
    raise RuntimeError("scene-qa generator found no question")  # pragma: no cover


def gen_pope(rng, category: str | None = None):
    """POPE: 'Is there a <object> in the image?' with random, popular or adversarial negatives."""
    objs = random_scene(rng)
    present = {o.name for o in objs}
    if category is None:
        category = str(rng.choice(["random", "popular", "adversarial"]))
    if int(rng.integers(2)):
        o = objs[int(rng.integers(len(objs)))]
        name, answer = o.name, "yes"
    else:
        absent = [f"{c} {s}" for c, s in OBJECT_TYPES if f"{c} {s}" not in present]
        if category == "popular":  # the most frequent objects of the data that are not in the image
            cands = absent[:3]
        elif category == "adversarial":  # shares colour or shape with an object in the image
            cands = [n for n in absent if any(n.split()[0] == o.color or n.split()[1] == o.shape for o in objs)]
        else:
            cands = absent
        name, answer = cands[int(rng.integers(len(cands)))], "no"
    return render_scene(objs, rng), f"Is there a {name} in the image?", answer, "pope", category


def gen_count(rng):
    objs = random_scene(rng)
    kind = int(rng.integers(3))
    if kind == 0:
        q, a, qt = "How many objects are there?", len(objs), "count-all"
    elif kind == 1:
        s = str(rng.choice(SHAPES))
        q, a, qt = f"How many {s}s are there?", sum(o.shape == s for o in objs), "count-shape"
    else:
        c = str(rng.choice(list(COLORS)))
        q, a, qt = f"How many {c} objects are there?", sum(o.color == c for o in objs), "count-color"
    return render_scene(objs, rng), q, str(a), qt, ""


def gen_mcq(rng):
    """ScienceQA/MMMU-like: four lettered options, the answer is a letter."""
    objs = random_scene(rng)
    o = objs[int(rng.integers(len(objs)))]
    if int(rng.integers(2)):
        q, right, pool = f"Which color is the shape at the {CELL_NAMES[o.cell]}?", o.color, list(COLORS)
    else:
        q, right, pool = f"Which shape is at the {CELL_NAMES[o.cell]}?", o.shape, SHAPES
    wrong = [x for x in pool if x != right]
    options = [right] + [str(x) for x in rng.choice(wrong, size=3, replace=False)]
    rng.shuffle(options)
    opts = " ".join(f"{LETTERS[i]}. {x}" for i, x in enumerate(options))
    q = f"{q} {opts} Answer with the option's letter."
    return render_scene(objs, rng), q, LETTERS[options.index(right)], "mcq", ""


def gen_ocr(rng):
    n = int(rng.integers(2, 5))
    text = "".join(str(int(d)) for d in rng.integers(0, 10, size=n))
    q = str(rng.choice(["What number is written in the image?", "Read the text in the image."]))
    return render_text(text, rng), q, text, "ocr", ""


def gen_digits(rng, split: str = "train"):
    images, target = sklearn_digits(split)
    i = int(rng.integers(len(target)))
    return digit_image(images[i]), "Which digit is this?", str(int(target[i])), "digits", ""


def gen_text_only(rng):
    """A language task with no image: small-number arithmetic in words or digits."""
    a, b = (int(x) for x in rng.integers(0, 10, size=2))
    if int(rng.integers(2)):
        q, ans, qt = f"What is {a} plus {b}?", str(a + b), "add"
    else:
        q, ans, qt = f"What number comes after {NUMBER_WORDS[a]}?", str(a + 1), "next"
    return None, q, ans, qt, ""


_GENERATORS: dict[str, Callable] = {
    "caption": gen_caption, "scene-qa": gen_scene_qa, "pope": gen_pope, "count": gen_count,
    "mcq": gen_mcq, "ocr": gen_ocr, "digits": gen_digits, "text-only": gen_text_only,
}


def make_record(family: str, rng: np.random.Generator, idx: int, split: str) -> dict[str, Any]:
    if family == "digits":
        image, q, a, qtype, cat = gen_digits(rng, "train" if split == "train" else "test")
    elif family == "pope" and split != "train":  # balanced random / popular / adversarial thirds
        image, q, a, qtype, cat = gen_pope(rng, ["random", "popular", "adversarial"][idx % 3])
    else:
        image, q, a, qtype, cat = _GENERATORS[family](rng)
    human = f"<image>\n{q}" if image is not None else q
    return {
        "id": f"{family}-{idx:06d}",
        "image": image,
        "family": family,
        "conversations": [{"from": "human", "value": human}, {"from": "gpt", "value": a}],
        "answer": a,
        "qtype": qtype,
        "category": cat,
    }


def generate_records(split: str, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """`split` is "train" (the mix of all families) or a benchmark name. Deterministic in (split, n, seed)."""
    check_names("split", [split], ["train"] + BENCHMARKS)
    rng = np.random.default_rng([seed, _SPLIT_CODE[split]])
    if split == "train":
        counts = {f: int(round(share * n)) for f, share in TRAIN_MIX.items()}
        counts["caption"] += n - sum(counts.values())
        families = [f for f, k in counts.items() for _ in range(k)]
        families = [families[i] for i in rng.permutation(len(families))]
    else:
        families = [split] * n
    return [make_record(f, rng, i, split) for i, f in enumerate(families)]


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
        return load_from_disk(str(path))
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
    text = path.read_text()
    if path.suffix == ".jsonl":
        rows = []
        for i, line in enumerate(text.splitlines()):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}: line {i + 1} is not valid JSON ({e})") from None
        return rows
    rows = json.loads(text)
    if not isinstance(rows, list):
        raise ValueError(f"{path}: expected a JSON list of LLaVA records, got {type(rows).__name__}")
    return rows


def load_llava_json(path: str | Path, image_folder: str | Path | None = None):
    """Read LLaVA-format records (as in llava_v1_5_mix665k.json) into the same Dataset schema.

    Only the first human/gpt exchange of each conversation is kept (the embedded study is single-turn).
    A malformed row or a missing image raises a ValueError naming the row id and the file.
    """
    from datasets import Dataset

    path = Path(path)
    folder = Path(image_folder) if image_folder else path.parent
    out = []
    for i, row in enumerate(_llava_rows(path)):
        rid = row.get("id", f"#{i}") if isinstance(row, dict) else f"#{i}"
        where = f"row id={rid!r} in {path}"
        conv = row.get("conversations") if isinstance(row, dict) else None
        if (not isinstance(conv, list) or len(conv) < 2 or not all(isinstance(t, dict) for t in conv[:2])
                or conv[0].get("from") != "human" or conv[1].get("from") != "gpt"
                or not isinstance(conv[0].get("value"), str) or not isinstance(conv[1].get("value"), str)):
            raise ValueError(f"malformed {where}: expected 'conversations' starting with a human then a gpt turn")
        image = None
        if row.get("image"):
            ipath = folder / row["image"]
            if not ipath.is_file():
                raise ValueError(f"missing image {ipath} for {where}")
            image = Image.open(ipath).convert("RGB")
        human = conv[0]["value"]
        if image is not None and "<image>" not in human:
            human = "<image>\n" + human
        if image is None:
            human = human.replace("<image>\n", "").replace("<image>", "")
        answer = conv[1]["value"]
        out.append({"id": str(rid), "image": image, "family": row.get("family", "user"),
                    "conversations": [{"from": "human", "value": human}, {"from": "gpt", "value": answer}],
                    "answer": answer, "qtype": row.get("qtype", "user"), "category": row.get("category", "")})
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


def prompt_text(human: str) -> str:
    return f"USER: {human} ASSISTANT:"


def encode(example: dict, processor, n_image_tokens: int) -> dict:
    """input_ids = prompt + answer + </s>; labels = -100 on the prompt (and image tokens), ids on the answer.

    The `<image>` placeholder is expanded to `n_image_tokens` copies, exactly as `LlavaProcessor` does.
    """
    tok = processor.tokenizer
    human, answer = example["conversations"][0]["value"], example["conversations"][1]["value"]
    prompt = prompt_text(human).replace("<image>", "<image>" * n_image_tokens)
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    a_ids = tok(" " + answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    return {"input_ids": p_ids + a_ids, "labels": [-100] * len(p_ids) + a_ids}


def tokenize_dataset(ds, processor, max_length: int = 128):
    """Add `input_ids` and `labels` columns (images stay as images; the collator normalises them)."""
    from .models import num_image_tokens

    n = num_image_tokens(processor)
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
        ids = torch_full((len(batch), n), self.pad)
        labels = torch_full((len(batch), n), -100)
        mask = torch_full((len(batch), n), 0)
        for i, b in enumerate(batch):
            k = len(b["input_ids"])
            ids[i, :k] = torch_tensor(b["input_ids"])
            labels[i, :k] = torch_tensor(b["labels"])
            mask[i, :k] = 1
        out = {"input_ids": ids, "attention_mask": mask, "labels": labels}
        images = [b["image"].convert("RGB") for b in batch if b.get("image") is not None]
        if images:
            out["pixel_values"] = self.processor.image_processor(images, return_tensors="pt")["pixel_values"]
        return out


def torch_full(shape, value):
    import torch

    return torch.full(shape, value, dtype=torch.long)


def torch_tensor(values):
    import torch

    return torch.tensor(values, dtype=torch.long)
