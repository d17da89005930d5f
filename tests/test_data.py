import json

import numpy as np
import pytest

from studylib import collate as C
from studylib import data as D
from studylib import llava_json


def _pixels(im):
    return None if im is None else np.asarray(im).tobytes()


def test_same_seed_gives_same_records_and_different_seed_differs():
    a, b = D.generate_records("train", 60, seed=3), D.generate_records("train", 60, seed=3)
    assert [r["conversations"] for r in a] == [r["conversations"] for r in b]
    assert [_pixels(r["image"]) for r in a] == [_pixels(r["image"]) for r in b]
    c = D.generate_records("train", 60, seed=4)
    assert [r["conversations"] for r in a] != [r["conversations"] for r in c]


def test_dataset_cache_and_fingerprint(tmp_path):
    d1 = D.build_dataset("count", 30, 1, tmp_path / "a")
    d2 = D.build_dataset("count", 30, 1, tmp_path / "b")
    assert d1._fingerprint == d2._fingerprint
    assert d1["answer"] == d2["answer"]
    again = D.build_dataset("count", 30, 1, tmp_path / "a")  # from the cache
    assert again["id"] == d1["id"]
    assert not list((tmp_path / "a").glob("*.tmp*")), "no partial cache left behind"
    assert D.build_dataset("count", 30, 2, tmp_path / "a")._fingerprint != d1._fingerprint


def test_train_mix_has_every_family_in_llava_format():
    recs = D.generate_records("train", 500, seed=0)
    fams = {r["family"] for r in recs}
    assert fams == set(D.FAMILIES)
    assert sum(len(r["conversations"]) == 4 for r in recs) > 0.8 * sum(r["family"] == "multi" for r in recs)
    for r in recs:
        conv = r["conversations"]
        assert [t["from"] for t in conv] == ["human", "gpt"] * (len(conv) // 2)
        # multi-turn: up to 2 questions about one image (a question the scene does not admit is dropped)
        assert len(conv) // 2 <= (2 if r["family"] == "multi" else 1)
        question = conv[0]["value"].removesuffix("\n<image>")
        assert conv[1]["value"] == (D.pope_reply(question, r["answer"]) if r["qtype"] == "pope" else r["answer"])
        assert len({t["value"] for t in conv[0::2]}) == len(conv) // 2, "no question asked twice"
        assert (r["image"] is None) == (r["family"] == "text-only")
        assert conv[0]["value"].endswith("\n<image>") == (r["image"] is not None), "the question, then the image"
        assert all("<image>" not in t["value"] for t in conv[1:]), "one image placeholder, in the first turn"
        if r["image"] is not None:
            assert r["image"].size == (D.IMAGE_SIZE, D.IMAGE_SIZE)


def test_benchmarks_are_held_out_and_state_chance():
    train_q = {(r["conversations"][0]["value"], _pixels(r["image"])) for r in D.generate_records("train", 300, 0)}
    for b in D.BENCHMARKS:
        ds = D.generate_records(b, 60, seed=0)
        assert {r["family"] for r in ds} == {b}
        if b not in ("text-only", "digits"):  # these two have small finite item spaces by design
            assert sum((r["conversations"][0]["value"], _pixels(r["image"])) in train_q for r in ds) < 3
    pope = D.build_dataset("pope", 90, 0)
    assert sorted(set(pope["category"])) == ["adversarial", "popular", "random"]
    assert 0.4 < D.chance_level(pope) < 0.6
    mcq = D.build_dataset("mcq", 200, 0)
    assert 0.2 < D.chance_level(mcq) < 0.45  # popular colours and shapes make "A" the blind favourite
    assert D.chance_level(D.build_dataset("ocr", 100, 0)) < 0.05


def test_digits_split_is_disjoint():
    tr, ytr = D.sklearn_digits("train")
    te, yte = D.sklearn_digits("test")
    assert len(tr) == 1197 and len(te) == 600
    assert set(ytr) == set(yte) == set(range(10))
    # every one of the 1797 images is in exactly one split
    all_images = sorted(a.tobytes() for a in np.concatenate([tr, te]))
    from sklearn.datasets import load_digits

    assert all_images == sorted(a.tobytes() for a in load_digits().images)


def test_unknown_split_and_bad_size():
    with pytest.raises(ValueError, match="valid splits are: train, scene-qa"):
        D.generate_records("nope", 3)
    with pytest.raises(ValueError, match="n must be a positive"):
        D.build_dataset("count", 0)


def test_llava_json_round_trip(tmp_path):
    ds = D.build_dataset("scene-qa", 5, 0, tmp_path / "c")
    path = llava_json.save(ds, tmp_path / "export")
    back = llava_json.load(path)
    assert back["conversations"] == ds["conversations"]
    assert [_pixels(i) for i in back["image"]] == [_pixels(i) for i in ds["image"]]


def test_llava_jsonl_text_only_and_missing_image_tag(tmp_path):
    from PIL import Image

    Image.new("RGB", (32, 32)).save(tmp_path / "x.png")
    rows = [{"id": "a", "image": "x.png", "conversations": [{"from": "human", "value": "What?"},
                                                             {"from": "gpt", "value": "this"}]},
            {"id": "b", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "yo"}]}]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    ds = llava_json.load(tmp_path / "d.jsonl")
    assert ds[0]["conversations"][0]["value"] == "<image>\nWhat?" and ds[1]["image"] is None


def test_malformed_row_and_missing_image_name_the_row(tmp_path):
    good = {"id": "ok", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}
    bad = {"id": "row-17", "conversations": [{"from": "gpt", "value": "a"}]}
    (tmp_path / "bad.json").write_text(json.dumps([good, bad]))
    with pytest.raises(ValueError, match=r"row id='row-17' in .*bad.json"):
        llava_json.load(tmp_path / "bad.json")
    missing = dict(good, id="img-3", image="nowhere.png")
    (tmp_path / "miss.json").write_text(json.dumps([missing]))
    with pytest.raises(ValueError, match=r"missing image .*nowhere.png for row id='img-3'"):
        llava_json.load(tmp_path / "miss.json")
    (tmp_path / "broken.jsonl").write_text(json.dumps(good) + "\n{not json\n")
    with pytest.raises(ValueError, match="line 2 is not valid JSON"):
        llava_json.load(tmp_path / "broken.jsonl")


def test_encode_masks_prompt_and_collator_batches(tiny_processor):
    recs = D.generate_records("train", 40, 0)
    n = C.num_image_tokens(tiny_processor)
    enc = [C.encode(r, tiny_processor, n) for r in recs]
    tok = tiny_processor.tokenizer
    for r, e in zip(recs, enc):
        answer_ids = [i for i in e["labels"] if i != -100]
        answers = [t["value"] for t in r["conversations"][1::2]]
        assert answer_ids.count(tok.eos_token_id) == len(answers), "every answer ends with </s>"
        decoded = tok.decode(answer_ids).split("</s>")[:-1]
        assert [d.strip() for d in decoded] == answers
        assert answer_ids[-1] == tok.eos_token_id
        image_id = tok.convert_tokens_to_ids("<image>")
        assert e["input_ids"].count(image_id) == (n if r["image"] is not None else 0)
        # the prompt encodes as the processor encodes it at evaluation time
        prompt_len = e["labels"].index(answer_ids[0])
        kw = {"images": [r["image"]]} if r["image"] is not None else {}
        ref = tiny_processor(text=[C.prompt_text(r["conversations"][0]["value"])], **kw)["input_ids"][0]
        assert list(ref) == e["input_ids"][:prompt_len]
    batch = C.Collator(tiny_processor)([dict(e, image=r["image"]) for e, r in zip(enc, recs)])
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    assert batch["pixel_values"].shape[0] == sum(r["image"] is not None for r in recs)
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()


def test_pack_rows_is_a_partition_within_capacity():
    lengths = [50, 20, 90, 30, 10, 60, 45, 5]
    rows = C.pack_rows(lengths, 100)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 100 for row in rows)
    assert len(rows) == 4  # 310 tokens: first-fit decreasing needs one row more than the bound of 4 x 100
    assert C.pack_rows([250, 20], 100) == [[0], [1]]  # a row is at least as wide as the longest example


@pytest.mark.parametrize("preset", ["llava-tiny", "bunny-tiny"])
def test_packed_batches_give_the_padded_loss_and_gradients(preset, cache_dir):
    """Packing is exact: each example attends only to itself, so loss and gradients equal the padded batch's."""
    import torch

    from studylib import models as M

    proc = M.build_processor(preset)
    model = M.build_model(preset, proc, seed=0)
    ds = C.tokenize_dataset(D.build_dataset("train", 24, seed=3), proc)
    batch = [ds[i] for i in range(len(ds))]
    assert any(b["image"] is None for b in batch) and any(b["image"] is not None for b in batch)
    padded, packed = C.Collator(proc)(batch), C.PackingCollator(proc, capacity=120)(batch)
    assert packed["input_ids"].shape[0] < len(batch)  # several examples share a row
    assert packed["input_ids"].numel() < padded["input_ids"].numel()
    torch.testing.assert_close(packed["pixel_values"].sum(0), padded["pixel_values"].sum(0))  # same images, reordered
    grads = []
    for inputs in (padded, packed):
        model.zero_grad()
        loss = model(**inputs).loss
        loss.backward()
        grads.append((loss.item(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-5)
    for a, b in zip(grads[0][1], grads[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    # without the block-diagonal mask (one position sequence per row) the loss would differ: the test can fail
    leaky = dict(packed, position_ids=torch.arange(packed["input_ids"].shape[1]).expand_as(packed["input_ids"]))
    exact_error = abs(grads[1][0] - grads[0][0])
    assert abs(model(**leaky).loss.item() - grads[0][0]) > 20 * exact_error + 1e-6


def test_pope_replies_name_the_object_found():
    assert D.pope_reply("Is there a red circle in the image?", "yes") == "red circle, yes"
    assert D.pope_reply("Is there a cross in the image?", "yes") == "cross, yes"
    assert D.pope_reply("Is there a cross in the image?", "no") == "no"
    pope = D.build_dataset("pope", 30, 0)
    assert set(pope["answer"]) == {"yes", "no"}  # the benchmark's answers stay yes/no
    for conv, answer in zip(pope["conversations"], pope["answer"]):
        assert (conv[1]["value"] == "no") == (answer == "no")
