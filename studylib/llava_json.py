"""LLaVA-format records: their `datasets` schema, and reading and writing them as JSON / JSONL with images.

A record is a LLaVA conversation (turns alternating "human", "gpt"; one `<image>` placeholder in the first
question when there is an image) plus the fields the evaluator needs (`features`). `load` reads a file such as
llava_v1_5_mix665k.json and its image folder into that schema; `save` writes the inverse (data.json + images/).
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image


def features():
    """The `datasets` schema of a record (the embedded splits' and user data's): id, image (an Image feature,
    None without an image), family, conversations [{from, value}], answer, qtype, category."""
    from datasets import Features, Image as HFImage, Value

    turn = {"from": Value("string"), "value": Value("string")}
    return Features({
        "id": Value("string"), "image": HFImage(), "family": Value("string"),
        "conversations": [turn], "answer": Value("string"), "qtype": Value("string"),
        "category": Value("string"),
    })


def image_question(question: str) -> str:
    """The first human turn of an embedded record: the question, then the image ("{question}\\n<image>").

    LLaVA-1.5 puts the image first. The embedded records put the question first, so that the language model
    reads every image token already knowing what is asked (a causal LM cannot look ahead). Both orders are
    LLaVA format (mix-665k holds both). Measured together with the templated tokenizer, the teacher gained on
    every image benchmark but POPE (mcq 0.67 -> 0.99, digits 0.69 -> 0.81); POPE needed `pope_reply` (README,
    "POPE: why the reply names the object"; `data.pope_reply`)."""
    return f"{question}\n<image>"


def _rows(path: Path) -> list[dict]:
    """The rows of a JSON list or a JSONL file (one object a line); a file that does not parse names itself."""
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


def load(path: str | Path, image_folder: str | Path | None = None):
    """Read LLaVA-format records (as in llava_v1_5_mix665k.json) into the Dataset schema `features`.

    Multi-turn conversations are kept (turns must alternate human, gpt). A malformed row or a missing image raises a ValueError naming the row id and the file.
    """
    from datasets import Dataset

    path = Path(path)
    folder = Path(image_folder) if image_folder else path.parent
    out = []
    for i, row in enumerate(_rows(path)):
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


def save(ds, out_dir: str | Path) -> Path:
    """Write a Dataset as LLaVA JSON plus an image folder (the inverse of `load`)."""
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


