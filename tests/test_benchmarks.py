"""Real benchmarks (studylib.benchmarks): loaders on tiny fixtures written in the lmms-lab schemas (hub parquet
layout and save_to_disk), prompts, official metrics against hand-computed values, errors, and evaluate_real."""

import re
import time

import pytest
from PIL import Image

from studylib import benchmarks as B

SHORT = "\nAnswer the question using a single word or phrase."
LETTER = "\nAnswer with the option's letter from the given choices directly."
COLORS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "white": (240, 240, 240),
          "black": (0, 0, 0), "yellow": (230, 220, 30), "purple": (150, 40, 200), "grey": (128, 128, 128)}


def img(color: str, size=(40, 30)) -> Image.Image:
    return Image.new("RGB", size, COLORS[color])


# ----------------------------------------------------------------------------------------------
# Fixture writers: the lmms-lab schemas (features and split / config names as on the hub)


def _features():
    from datasets import Features, Image as HFImage, Value

    s, i32 = Value("string"), Value("int32")
    return {
        "gqa_q": Features({"id": s, "imageId": s, "question": s, "answer": s, "fullAnswer": s,
                           "isBalanced": Value("bool"), "types": {"structural": s, "semantic": s, "detailed": s},
                           "semanticStr": s}),
        "gqa_i": Features({"id": s, "image": HFImage()}),
        "pope": Features({"id": s, "question_id": s, "question": s, "answer": s, "image_source": s,
                          "image": HFImage(), "category": s}),
        "scienceqa-img": Features({"image": HFImage(), "question": s, "choices": [s], "answer": Value("int8"),
                                   "hint": s, "task": s, "grade": s, "subject": s, "topic": s, "category": s,
                                   "skill": s, "lecture": s, "solution": s}),
        "mme": Features({"question_id": s, "image": HFImage(), "question": s, "answer": s, "category": s}),
        "textvqa": Features({"image_id": s, "question_id": i32, "question": s, "question_tokens": [s],
                             "image": HFImage(), "image_width": i32, "image_height": i32, "flickr_original_url": s,
                             "flickr_300k_url": s, "answers": [s], "image_classes": [s], "set_name": s,
                             "ocr_tokens": [s]}),
        "mmmu": Features({"id": s, "question": s, "options": s, "explanation": s,
                          **{f"image_{k}": HFImage() for k in range(1, 8)}, "img_type": s, "answer": s,
                          "topic_difficulty": s, "question_type": s, "subfield": s}),
    }


def _rows():
    gqa_images = [{"id": f"n{k}", "image": img(c)} for k, c in enumerate(["red", "green", "blue", "white"])]
    gqa = [{"id": f"2010{k}", "imageId": f"n{k % 3}", "question": q, "answer": a, "fullAnswer": f"{a}.",
            "isBalanced": True, "types": {"structural": st, "semantic": "attr", "detailed": "d"}, "semanticStr": ""}
           for k, (q, a, st) in enumerate([("Is the sky blue?", "yes", "verify"), ("Is it a cat?", "no", "verify"),
                                           ("What color is the car?", "red", "query"),
                                           ("Which side is the cup on?", "left", "choose"),
                                           ("What is on the table?", "laptop", "query")])]
    pope = [{"id": str(k), "question_id": str(k + 1), "question": f"Is there a {o} in the image?", "answer": a,
             "image_source": f"COCO_val2014_{k:012d}", "image": img(c), "category": cat}
            for k, (o, a, c, cat) in enumerate([
                ("dog", "yes", "red", "adversarial"), ("cat", "yes", "green", "adversarial"),
                ("car", "no", "blue", "popular"), ("cup", "no", "white", "popular"),
                ("bus", "yes", "black", "random"), ("tie", "no", "yellow", "random")])]
    sqa = [{"image": img(c), "question": q, "choices": ch, "answer": a, "hint": h, "task": "closed choice",
            "grade": "grade4", "subject": subj, "topic": "t", "category": "c", "skill": "s", "lecture": "",
            "solution": ""}
           for c, q, ch, a, h, subj in [
               ("red", "Which animal's feet are also adapted for swimming?", ["duck", "cat"], 0,
                "Ducks live near water.", "natural science"),
               ("green", "Which state is farthest north?", ["Ohio", "Maine", "Texas"], 1, "", "social science"),
               ("blue", "What is the capital of Utah?", ["Denver", "Salt Lake City", "Boise", "Helena"], 1, "",
                "social science"),
               ("white", "Which is a solid?", ["milk", "rock"], 1, "Look at the picture.", "natural science")]]
    mme = [{"question_id": f"{cat}/{name}.jpg", "image": img(c), "question": f"{q} Please answer yes or no.",
            "answer": a, "category": cat}
           for cat, name, c, q, a in [
               ("existence", "000000006471", "red", "Is there a baseball bat in this image?", "Yes"),
               ("existence", "000000006471", "red", "Is there a giraffe in this image?", "No"),
               ("existence", "000000015254", "green", "Is there a spoon in this image?", "Yes"),
               ("existence", "000000015254", "green", "Is there a donut in this image?", "No"),
               ("OCR", "0001", "blue", "Is the word in the logo \"angie's\"?", "Yes"),
               ("OCR", "0001", "blue", "Is the word in the logo \"angle's\"?", "No"),
               ("code_reasoning", "0020", "white", "The image shows a python code. Is the output \"Hello\"?", "Yes"),
               ("code_reasoning", "0020", "white", "The image shows a python code. Is the output \"World\"?", "No")]]
    textvqa = [{"image_id": f"{k:016x}", "question_id": 34602 + k, "question": q, "question_tokens": q.split(),
                "image": img(c, (64, 48)), "image_width": 64, "image_height": 48, "flickr_original_url": "",
                "flickr_300k_url": "", "answers": ans, "image_classes": ["Camera"], "set_name": "val",
                "ocr_tokens": ocr}
               for k, (q, c, ans, ocr) in enumerate([
                   ("what is the brand of this camera?", "black", ["dakota"] * 8 + ["dakota digital"] * 2,
                    ["dakota", "digital"]),
                   ("what number is on the jersey?", "red", ["22"] * 3 + ["twenty two"] * 7, []),
                   ("what does the sign say?", "white", ["stop"] * 10, ["stop", "ahead"])])]
    textvqa_train = [dict(textvqa[0], question_id=1, question="what is this?")]
    mmmu = [{"id": f"validation_{subj}_{k + 1}", "question": q, "options": opts, "explanation": "",
             "image_1": img(c), **{f"image_{j}": None for j in range(2, 8)}, "img_type": "['Diagrams']",
             "answer": a, "topic_difficulty": "Easy", "question_type": t, "subfield": "sub"}
            for k, (subj, q, opts, c, a, t) in enumerate([
                ("Art_Theory", "<image 1> Which style is this?", "['Baroque', 'Cubism', 'Pop art']", "red", "B",
                 "multiple-choice"),
                ("Math", "What is the area of <image 1>?", "['12', '16', '24', '30']", "green", "C",
                 "multiple-choice"),
                ("Physics", "Compute the speed in <image 1> (m/s).", "[]", "blue", "3.5", "open"),
                ("Biology", "Which organ is shown in <image 1>?", "['heart', 'lung']", "white", "A",
                 "multiple-choice")])]
    return {"gqa_q": gqa, "gqa_i": gqa_images, "pope": pope, "scienceqa-img": sqa, "mme": mme, "textvqa": textvqa,
            "textvqa_train": textvqa_train, "mmmu": mmmu}


N_ROWS = {"gqa": 5, "pope": 6, "scienceqa-img": 4, "mme": 8, "textvqa": 3, "mmmu": 4}


def write_fixtures(root):
    """Every benchmark twice: `root/hub/<name>` (the hub repository's parquet layout) and `root/disk/<name>`
    (save_to_disk). Returns {"hub": {name: folder}, "disk": {name: folder}}."""
    from datasets import Dataset, DatasetDict

    f, r = _features(), _rows()

    def ds(key, rows=None):
        return Dataset.from_list(rows if rows is not None else r[key], features=f[key.split("_train")[0]])

    def parquet(d, path):
        path.parent.mkdir(parents=True, exist_ok=True)
        d.to_parquet(str(path))

    hub, disk = root / "hub", root / "disk"
    parquet(ds("gqa_q"), hub / "gqa/testdev_balanced_instructions/testdev-00000-of-00001.parquet")
    parquet(ds("gqa_i"), hub / "gqa/testdev_balanced_images/testdev-00000-of-00001.parquet")
    DatasetDict({"testdev": ds("gqa_q")}).save_to_disk(str(disk / "gqa/testdev_balanced_instructions"))
    DatasetDict({"testdev": ds("gqa_i")}).save_to_disk(str(disk / "gqa/testdev_balanced_images"))
    parquet(ds("pope"), hub / "pope/data/test-00000-of-00001-3b5f1a2c.parquet")
    DatasetDict({"test": ds("pope")}).save_to_disk(str(disk / "pope"))
    parquet(ds("scienceqa-img"), hub / "scienceqa-img/ScienceQA-IMG/test-00000-of-00001.parquet")
    ds("scienceqa-img").save_to_disk(str(disk / "scienceqa-img"))  # a plain Dataset folder
    mme = ds("mme")
    parquet(mme.select(range(4)), hub / "mme/data/test-00000-of-00002.parquet")  # split over 2 files
    parquet(mme.select(range(4, 8)), hub / "mme/data/test-00001-of-00002.parquet")
    DatasetDict({"test": mme}).save_to_disk(str(disk / "mme"))
    parquet(ds("textvqa"), hub / "textvqa/data/validation-00000-of-00001.parquet")
    parquet(ds("textvqa_train", r["textvqa_train"]), hub / "textvqa/data/train-00000-of-00001.parquet")
    DatasetDict({"train": ds("textvqa_train", r["textvqa_train"]), "validation": ds("textvqa")}).save_to_disk(
        str(disk / "textvqa"))
    parquet(ds("mmmu"), hub / "mmmu/data/validation-00000-of-00001.parquet")
    parquet(ds("mmmu", r["mmmu"][:1]), hub / "mmmu/data/dev-00000-of-00001.parquet")
    DatasetDict({"validation": ds("mmmu")}).save_to_disk(str(disk / "mmmu"))
    return {"hub": {n: hub / n for n in N_ROWS}, "disk": {n: disk / n for n in N_ROWS}}


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    root = tmp_path_factory.mktemp("real-benchmarks")
    return {**write_fixtures(root), "cache": root / "cache", "root": root}


@pytest.fixture(scope="module")
def loaded(fx):
    return {n: B.load_real(n, fx["hub"][n], cache_dir=fx["cache"]) for n in N_ROWS}


def human(ds) -> list[str]:
    return [c[0]["value"] for c in ds["conversations"]]


# ----------------------------------------------------------------------------------------------
# Loaders and prompts


@pytest.mark.parametrize("name", list(N_ROWS))
def test_loader_hub_parquet_layout(loaded, name):
    ds = loaded[name]
    assert len(ds) == N_ROWS[name]
    assert set(ds.column_names) == set(B.real_features())
    suffix = {"scienceqa-img": LETTER, "mmmu": None}.get(name, SHORT)
    for rec in ds:
        q = rec["conversations"][0]["value"]
        assert q.startswith("<image>\n") and q.count("<image>") == 1
        if suffix:
            assert q.endswith(suffix)
        assert isinstance(rec["image"], Image.Image) and rec["image"].size in ((40, 30), (64, 48))
        assert rec["conversations"][1]["value"] == rec["answer"] and rec["family"] == name


@pytest.mark.parametrize("name", list(N_ROWS))
def test_save_to_disk_layout_gives_the_same_records(fx, loaded, name):
    disk = B.load_real(name, fx["disk"][name], cache_dir=fx["cache"])
    hub = loaded[name]
    for col in ("id", "conversations", "answer", "qtype", "category", "options", "answers", "group"):
        assert disk[col] == hub[col], col
    assert disk[0]["image"].tobytes() == hub[0]["image"].tobytes()


def test_gqa_joins_images_on_image_id(loaded):
    ds = loaded["gqa"]
    colour = {"n0": COLORS["red"], "n1": COLORS["green"], "n2": COLORS["blue"]}
    rows = _rows()["gqa_q"]
    assert [r["id"] for r in rows] == ds["id"]
    for r, rec in zip(rows, ds):
        assert rec["image"].getpixel((0, 0)) == colour[r["imageId"]]
    assert ds["qtype"] == ["verify", "verify", "query", "choose", "query"]
    assert human(ds)[0] == "<image>\nIs the sky blue?" + SHORT


def test_prompts_match_llava(loaded):
    sqa = human(loaded["scienceqa-img"])
    assert sqa[0] == ("<image>\nContext: Ducks live near water.\nWhich animal's feet are also adapted for swimming?"
                      "\nA. duck\nB. cat" + LETTER)
    assert sqa[1] == "<image>\nWhich state is farthest north?\nA. Ohio\nB. Maine\nC. Texas" + LETTER  # no hint
    assert loaded["scienceqa-img"]["answer"] == ["A", "B", "B", "B"]
    assert loaded["scienceqa-img"]["options"][2] == ["Denver", "Salt Lake City", "Boise", "Helena"]
    mmmu = human(loaded["mmmu"])
    assert mmmu[0] == "<image>\n<image 1> Which style is this?\nA. Baroque\nB. Cubism\nC. Pop art\n" + LETTER
    assert mmmu[2] == "<image>\nCompute the speed in <image 1> (m/s).\n" + SHORT
    assert loaded["mmmu"]["qtype"] == ["multiple-choice", "multiple-choice", "open", "multiple-choice"]
    assert loaded["mmmu"]["options"][1] == ["12", "16", "24", "30"] and loaded["mmmu"]["options"][2] == []
    assert loaded["mmmu"]["category"][0] == "Art_Theory"
    tv = human(loaded["textvqa"])
    assert tv[0] == "<image>\nwhat is the brand of this camera?\nReference OCR token: dakota, digital" + SHORT
    assert tv[1] == "<image>\nwhat number is on the jersey?" + SHORT  # no OCR tokens
    assert loaded["textvqa"]["answers"][1] == ["22"] * 3 + ["twenty two"] * 7
    assert loaded["textvqa"]["answer"][1] == "twenty two"
    assert human(loaded["mme"])[0] == "<image>\nIs there a baseball bat in this image? Please answer yes or no." + SHORT
    assert loaded["mme"]["group"][:2] == ["existence/000000006471.jpg"] * 2
    assert human(loaded["pope"])[2] == "<image>\nIs there a car in the image?" + SHORT
    assert loaded["pope"]["category"] == ["adversarial"] * 2 + ["popular"] * 2 + ["random"] * 2


def test_limit_is_seeded_and_keeps_mme_image_pairs(fx):
    a = B.load_real("mme", fx["hub"]["mme"], limit=4, seed=1, cache_dir=fx["cache"])
    b = B.load_real("mme", fx["hub"]["mme"], limit=4, seed=1, cache_dir=fx["cache"])
    assert a["id"] == b["id"] and len(a) == 4
    assert all(a["group"].count(g) == 2 for g in a["group"])
    p = [B.load_real("pope", fx["hub"]["pope"], limit=3, seed=s, cache_dir=fx["cache"])["id"] for s in range(4)]
    assert all(len(x) == 3 and x == sorted(x, key=int) for x in p) and len({tuple(x) for x in p}) > 1
    with pytest.raises(ValueError, match="limit must be a positive"):
        B.load_real("pope", fx["hub"]["pope"], limit=0)


# ----------------------------------------------------------------------------------------------
# Metrics against hand-computed values


def test_mme_acc_plus_pairs_and_category_sums():
    ds = {"answer": ["Yes", "No"] * 4,
          "category": ["existence"] * 4 + ["OCR"] * 2 + ["code_reasoning"] * 2,
          "group": ["e1", "e1", "e2", "e2", "o1", "o1", "c1", "c1"]}
    preds = ["Yes", "No", "Yes", "Yes", "no", "No.", "Yes, it is", "no"]
    m = B.score_real("mme", preds, ds)
    # existence: acc 3/4 -> 75, acc+ 1/2 images -> 50; OCR: 50 + 0; code_reasoning: 100 + 100
    assert m["score_existence"] == 125 and m["score_OCR"] == 50 and m["score_code_reasoning"] == 200
    assert m["perception"] == 175 and m["cognition"] == 200 and m["total"] == 375
    assert m["accuracy"] == 6 / 8 and m["accuracy_plus"] == 2 / 4
    assert [B.parse_mme(t) for t in ["Yes.", "NO", "yes, there is", "Not really", "maybe"]] == \
           ["yes", "no", "yes", "no", "other"]
    with pytest.raises(ValueError, match="unknown categories \\['colour'\\]"):
        B.score_real("mme", ["Yes"], {"answer": ["Yes"], "category": ["colour"], "group": ["x"]})


def test_textvqa_vqa_accuracy_and_normalisation():
    other = ["pepsi"] * 7
    assert B.vqa_accuracy("2", ["2", "two"] + ["3"] * 8) == pytest.approx(0.6)  # 2 matches (number word)
    assert B.vqa_accuracy("Coca Cola.", ["coca-cola", "Coca Cola", "the coca cola"] + other) == pytest.approx(0.9)
    assert B.vqa_accuracy("stop", ["stop"] * 4 + ["go"] * 6) == 1.0
    assert B.vqa_accuracy("dont", ["don't"] + ["do"] * 9) == pytest.approx(0.3)
    assert B.vqa_accuracy("yes", ["no"] * 10) == 0.0
    assert B.normalize_vqa("The  Dog's, bowl!") == "dog 's bowl"
    assert B.normalize_vqa("3.5") == "3.5" and B.normalize_vqa("an apple.") == "apple"
    assert B.CONTRACTIONS["youd've"] == B.CONTRACTIONS["you'dve"] == "you'd've"
    m = B.score_real("textvqa", ["2", "stop"], {"answer": ["2", "stop"], "answers": [["2", "two"] + ["3"] * 8,
                                                                                     ["stop"] * 10]})
    assert m["accuracy"] == pytest.approx(0.8)


def test_pope_accuracy_precision_recall_f1():
    ds = {"answer": ["yes", "yes", "no", "no", "yes", "no"],
          "category": ["adversarial", "adversarial", "popular", "popular", "random", "random"]}
    preds = ["Yes.", "No, there is not.", "Yes", "There is no dog.", "yes it is", "I do not see one"]
    m = B.score_real("pope", preds, ds)
    # pred y n y n y n: TP 2, FP 1, FN 1, TN 2
    assert m["accuracy"] == pytest.approx(4 / 6) and m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3) and m["f1"] == pytest.approx(2 / 3) and m["yes_ratio"] == 0.5
    assert m["f1_adversarial"] == pytest.approx(2 / 3) and m["f1_popular"] == 0 and m["f1_random"] == 1
    assert m["accuracy_adversarial"] == 0.5 and m["accuracy_random"] == 1
    assert m["f1_mean_category"] == pytest.approx(5 / 9)
    assert B.parse_pope("") == "yes" and B.parse_pope("No") == "no" and B.parse_pope("Yes. No.") == "yes"


def test_scienceqa_letter_parsing_as_llava():
    assert [B.parse_sqa_letter(t, 3) for t in ["B", "B. Maine", "The answer is C.", "D", "B.", "maine"]] == \
           ["B", "B", "C", "", "", ""]
    m = B.score_real("scienceqa-img", ["A", "C. Texas", "The answer is B.", "A"],
                     {"answer": ["A", "B", "B", "B"], "options": [["a", "b"], ["a", "b", "c"], ["a"] * 4, ["a", "b"]]})
    assert m == {"accuracy": 0.5}


def test_mmmu_choice_open_and_options_literal():
    opts = ["cat", "dog", "bird", "fish"]
    assert [B.parse_mmmu_choice(t, opts) for t in ["(B)", "B", "C.", "The answer is D", "(A) or maybe (B)",
                                                   "I think it is clearly a fish swimming"]] == \
           ["B", "B", "C", "D", "B", "D"]
    guess = B.parse_mmmu_choice("hmm", opts, seed="validation_Art_1")
    assert guess in "ABCD" and guess == B.parse_mmmu_choice("hmm", opts, seed="validation_Art_1")
    assert B.mmmu_open_correct("The answer is 3.50", "3.5") and B.mmmu_open_correct("so the result is blue", "Blue")
    assert B.mmmu_open_correct("42", "['41', '42']") and not B.mmmu_open_correct("7", "8")
    assert B.parse_options("['1/2', 'x^2', 3]", "t") == ["1/2", "x^2", "3"]
    with pytest.raises(ValueError, match="list literal"):
        B.parse_options("__import__('os').getcwd()", "mmmu row id='x'")
    ds = {"answer": ["B", "C", "3.5", "A"], "options": [opts[:3], opts, [], opts[:2]],
          "qtype": ["multiple-choice", "multiple-choice", "open", "multiple-choice"], "id": ["a", "b", "c", "d"]}
    m = B.score_real("mmmu", ["B", "(A)", "It is 3.5 m/s", "B"], ds)
    assert m["accuracy"] == 0.5 and m["accuracy_multiple-choice"] == pytest.approx(1 / 3) and m["accuracy_open"] == 1


def test_gqa_exact_match_and_chance(loaded):
    assert B.score_real("gqa", ["Table.", "left", "No"], {"answer": ["table", "right", "no"]}) == \
           {"accuracy": pytest.approx(2 / 3)}
    # blind guesser per structural type: verify -> "yes" (1 of 2), query -> "red" (1 of 2), choose -> "left"
    assert B.chance_level("gqa", loaded["gqa"]) == pytest.approx(3 / 5)
    # MME: always "Yes" -> per category acc 50, acc+ 0; existence and OCR are perception
    assert B.chance_level("mme", loaded["mme"]) == 100


def test_prediction_count_must_match():
    with pytest.raises(ValueError, match="2 predictions for 1 records"):
        B.score_real("gqa", ["a", "b"], {"answer": ["a"]})


# ----------------------------------------------------------------------------------------------
# Bad input


def test_missing_split_is_named(fx):
    import shutil

    root = fx["root"] / "bad"
    shutil.copytree(fx["hub"]["textvqa"], root / "tv")
    (root / "tv/data/validation-00000-of-00001.parquet").unlink()
    with pytest.raises(ValueError, match=r"textvqa: .*has no split 'validation'.*found data/train-00000-of-00001"):
        B.load_real("textvqa", root / "tv", cache_dir=fx["cache"])
    shutil.copytree(fx["disk"]["mme"], root / "mme")
    (root / "mme/dataset_dict.json").write_text('{"splits": ["validation"]}')
    with pytest.raises(ValueError, match=r"mme: .*has no split 'test'; found splits \['validation'\]"):
        B.load_real("mme", root / "mme", cache_dir=fx["cache"])


def test_missing_file_or_config_is_named(fx):
    import shutil

    root = fx["root"] / "bad2"
    shutil.copytree(fx["hub"]["gqa"], root / "gqa")
    shutil.rmtree(root / "gqa/testdev_balanced_images")
    with pytest.raises(ValueError, match="gqa: .*has no split 'testdev' of config 'testdev_balanced_images'"):
        B.load_real("gqa", root / "gqa", cache_dir=fx["cache"])
    shutil.copytree(fx["disk"]["pope"], root / "pope")
    shutil.rmtree(root / "pope/test")
    with pytest.raises(ValueError, match="pope: missing file .*test/state.json"):
        B.load_real("pope", root / "pope", cache_dir=fx["cache"])
    shutil.copytree(fx["disk"]["textvqa"], root / "tv")
    for arrow in (root / "tv/validation").glob("*.arrow"):
        arrow.unlink()
    with pytest.raises(ValueError, match="textvqa: missing file in .*validation"):
        B.load_real("textvqa", root / "tv", cache_dir=fx["cache"])


def test_wrong_schema_is_named(fx):
    from datasets import load_from_disk

    root = fx["root"] / "bad3"
    load_from_disk(str(fx["disk"]["textvqa"])).remove_columns("answers").save_to_disk(str(root / "tv"))
    with pytest.raises(ValueError, match=r"textvqa: .*lacks columns \['answers'\].*found columns"):
        B.load_real("textvqa", root / "tv", cache_dir=fx["cache"])
    q = load_from_disk(str(fx["disk"]["gqa"] / "testdev_balanced_instructions"))
    q.map(lambda r: {"imageId": "n99" if r["id"] == "20101" else r["imageId"]}, keep_in_memory=True).save_to_disk(
        str(root / "gqa/testdev_balanced_instructions"))
    load_from_disk(str(fx["disk"]["gqa"] / "testdev_balanced_images")).save_to_disk(
        str(root / "gqa/testdev_balanced_images"))
    with pytest.raises(ValueError, match=r"imageId \['n99'\] .*testdev_balanced_images"):
        B.load_real("gqa", root / "gqa", cache_dir=fx["cache"])


@pytest.mark.parametrize("switches", [("HF_DATASETS_OFFLINE",), ("HF_HUB_OFFLINE",)])
def test_hub_id_offline_fails_fast_naming_the_switch(monkeypatch, switches):
    for k in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(k, raising=False)
    for k in switches:
        monkeypatch.setenv(k, "1")
    t0 = time.perf_counter()
    with pytest.raises(FileNotFoundError, match=f"'lmms-lab/MME' is not a local folder and {switches[0]}=1 "
                                                f"forbids the hub.*unset {switches[0]}"):
        B.load_real("mme")
    with pytest.raises(FileNotFoundError, match=f"{switches[0]}=1"):
        B.load_real("pope", "someone/POPE-copy")
    assert time.perf_counter() - t0 < 1.0


def test_unknown_name_lists_the_valid_names():
    with pytest.raises(ValueError, match="unknown real benchmark \\['vqav2'\\]; valid real benchmarks are: "
                                         "gqa, pope, scienceqa-img, mme, textvqa, mmmu"):
        B.load_real("vqav2", "anything")
    with pytest.raises(ValueError, match="valid real benchmarks are"):
        B.score_real("seed-bench", ["a"], {"answer": ["a"]})


# ----------------------------------------------------------------------------------------------
# End to end


def test_evaluate_real_tiny_model(loaded, tiny_processor, one_thread):
    from studylib import models as M

    model = M.build_model("llava-tiny", tiny_processor)
    table = B.evaluate_real(model, tiny_processor, loaded, model_name="tiny", batch_size=4, progress=False)
    assert list(table.columns) == ["model", "benchmark", "metric", "score", "n", "chance", "seconds", "primary"]
    assert set(table["benchmark"]) == set(N_ROWS) and (table["model"] == "tiny").all()
    assert (table["n"] == table["benchmark"].map(N_ROWS)).all()
    points = table["benchmark"].eq("mme") & ~table["metric"].isin(["accuracy", "accuracy_plus"])
    assert table.loc[~points, "score"].between(0, 1).all()
    top = {"perception": 400, "cognition": 200, "total": 600}  # existence + OCR; code_reasoning (200 each)
    assert all(0 <= s <= top.get(m, 200) for m, s in zip(table.loc[points, "metric"], table.loc[points, "score"]))
    primary = table[table["metric"] == table["benchmark"].map(B.PRIMARY_METRIC)]
    assert sorted(primary["benchmark"]) == sorted(N_ROWS) and primary["chance"].notna().all()
    assert table.loc[table.index.difference(primary.index), "chance"].isna().all()
    mme = table[table["benchmark"] == "mme"].set_index("metric")["score"]
    assert {"perception", "cognition", "score_existence", "score_OCR", "score_code_reasoning"} <= set(mme.index)
    assert mme["perception"] == pytest.approx(mme["score_existence"] + mme["score_OCR"])


def test_evaluation_dispatches_real_benchmarks_and_picks_their_primary_metric(loaded, tiny_processor, one_thread):
    """`evaluation.evaluate` scores real records with their official metrics; `primary` then selects e.g.
    POPE's F1 and MME's perception sum (not the embedded benchmarks' accuracy), and AVG % works on them."""
    from studylib import evaluation as E
    from studylib import models as M

    model = M.build_model("llava-tiny", tiny_processor)
    pair = {"pope": loaded["pope"], "mme": loaded["mme"]}
    table = E.evaluate(model, tiny_processor, pair, model_name="tiny", batch_size=4, progress=False)
    prim = E.primary(table).set_index("benchmark")["metric"]
    assert prim.to_dict() == {"pope": "f1", "mme": "perception"}
    assert set(E.summary(table)) >= {"pope", "mme"}
    assert E.chance_level("pope", loaded["pope"]) == B.chance_level("pope", loaded["pope"])


def test_load_many_parses_name_source_pairs(fx):
    assert B.parse_sources("pope=/x/POPE, mme") == {"pope": "/x/POPE", "mme": None}
    many = B.load_many(f"pope={fx['hub']['pope']},mme={fx['hub']['mme']}", limit=2, cache_dir=fx["cache"])
    assert list(many) == ["pope", "mme"] and len(many["pope"]) == 2 and all(B.is_real(d) for d in many.values())
    with pytest.raises(ValueError, match="valid real benchmarks are"):
        B.parse_sources("pope=/x,vqav2=/y")
    with pytest.raises(ValueError, match="expected NAME"):
        B.parse_sources(" , ")


def test_cli_evaluate_on_real_benchmarks_and_its_bad_input(fx, tiny_teacher, tmp_path, capsys):
    import json

    from studylib import cli

    out = tmp_path / "eval.json"
    assert cli.main(["evaluate", str(tiny_teacher), "--real", f"pope={fx['hub']['pope']},mme={fx['disk']['mme']}",
                     "--cache", str(fx["cache"]), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["summary"]) == {"pope", "mme"}
    for args, match in [(["--real", "vqav2=/x"], "valid real benchmarks are"),
                        (["--real", "pope", "--benchmarks", "count"], "pass one of them"),
                        (["--real", f"pope={fx['root'] / 'nowhere'}"], "nowhere")]:
        assert cli.main(["evaluate", str(tiny_teacher), *args, "--out", str(tmp_path / "never.json")]) == 2
        assert re.search(match, capsys.readouterr().err)
    assert not (tmp_path / "never.json").exists()
