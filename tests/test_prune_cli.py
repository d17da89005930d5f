"""`studylib prune` end to end on the tiny teacher, its input checks, and the calibration sampler."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from studylib import cli
from studylib import collate
from studylib import models as M
from studylib import pruning as P

ROOT = Path(__file__).resolve().parent.parent
N_TRAIN = 200  # the tiny teacher's instruction mix (tests/conftest.py): already in the session cache


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def prune_args(model, out, *extra, cache=None):
    return ["prune", str(model), "--out", str(out), "--n-train", str(N_TRAIN),
            *(["--cache", str(cache)] if cache else []), *extra]


def achieved_ratio(stdout: str) -> float:
    m = re.search(r"achieved LM ratio (\d\.\d+)", stdout)
    assert m, stdout
    return float(m[1])


def check_checkpoint(out: Path, stdout: str, paradigm: str, criterion: str):
    for name in ("config.json", "model.safetensors", "pruning_plan.json", "importance.json", "tokenizer.json"):
        assert (out / name).is_file(), name
    plan = P.PruningPlan.load(out / "pruning_plan.json")
    importance = json.loads((out / "importance.json").read_text())
    assert (plan.paradigm, plan.criterion) == (paradigm, criterion)
    assert (importance["paradigm"], importance["criterion"]) == (paradigm, criterion)
    assert achieved_ratio(stdout) == pytest.approx(plan.lm_ratio, abs=1e-4)
    assert f"whole-model ratio {plan.model_ratio:.4f}" in stdout
    model, processor = M.load(out)  # a plain HF checkpoint (plus the registered pruned_* classes)
    assert P.count_params(model) == (plan.lm_params_after, plan.model_params_after)
    inputs = processor(text=["USER: <image>\nHow many objects are there? ASSISTANT:"],
                       images=[red_image()], return_tensors="pt")
    with torch.no_grad():
        model.generate(**inputs, max_new_tokens=3, do_sample=False)
    return model, plan


def red_image():
    from PIL import Image

    return Image.new("RGB", (32, 32), (200, 40, 40))


def test_calibration_batches_are_seeded_samples_of_the_instruction_mix(tiny_teacher, cache_dir):
    _, processor = M.load(tiny_teacher)
    batches = P.calibration_batches(processor, 7, seed=0, batch_size=3, cache_dir=cache_dir, n_train=N_TRAIN)
    assert [len(b["input_ids"]) for b in batches] == [3, 3, 1]
    n_image_tokens = collate.num_image_tokens(processor)
    image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    for b in batches:
        assert {"input_ids", "attention_mask", "labels"} <= set(b)
        assert b["input_ids"].shape == b["attention_mask"].shape == b["labels"].shape
        assert (b["labels"][b["attention_mask"] == 0] == -100).all()
        assert (b["labels"][b["input_ids"] == image_id] == -100).all()
        with_image = int((b["input_ids"] == image_id).sum()) // n_image_tokens
        assert len(b.get("pixel_values", [])) == with_image
    again = P.calibration_batches(processor, 7, seed=0, batch_size=3, cache_dir=cache_dir, n_train=N_TRAIN)
    other = P.calibration_batches(processor, 7, seed=1, batch_size=3, cache_dir=cache_dir, n_train=N_TRAIN)
    assert P.calibration_fingerprint(again) == P.calibration_fingerprint(batches)
    assert P.calibration_fingerprint(other) != P.calibration_fingerprint(batches)
    one_batch = P.calibration_batches(processor, 7, seed=0, batch_size=7, cache_dir=cache_dir, n_train=N_TRAIN)
    assert sum(int(b["attention_mask"].sum()) for b in one_batch) == sum(int(b["attention_mask"].sum()) for b in batches)
    assert (P.default_calib_samples("taylor"), P.default_calib_samples("taylor-vector")) == (10, 10)
    assert P.default_calib_samples("bi") == P.default_calib_samples("wanda") == 50
    with pytest.raises(ValueError, match=r"n \(calibration samples\) must be an int of at least 1 and at most 200"):
        P.calibration_batches(processor, 201, cache_dir=cache_dir, n_train=N_TRAIN)


def test_prune_cli_layerwise_in_a_fresh_process(tiny_teacher, tmp_path, cache_dir):
    out = tmp_path / "layer"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "studylib.cli",
                        *prune_args(tiny_teacher, out, "--paradigm", "layerwise", "--criterion", "bi",
                                    "--ratio", "0.3", "--calib-samples", "8", cache=cache_dir)],
                       capture_output=True, text=True, cwd=ROOT, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "requested LM ratio 0.3000" in r.stdout
    model, plan = check_checkpoint(out, r.stdout, "layerwise", "bi")
    assert model.config.text_config.num_hidden_layers == len(plan.kept_layers) < plan.num_layers
    assert "calibration: 8 random samples" in r.stdout


@pytest.mark.parametrize("extra, paradigm, criterion", [
    (["--ratio", "0.2", "--layers", "1:3", "--round-to", "2"], "widthwise", "taylor"),
    (["--ratio", "0.15"], "widthwise", "l2"),
    (["--n-layers", "1", "--seed", "3"], "layerwise", "random"),
], ids=["widthwise-taylor", "widthwise-l2", "layerwise-random-n-layers"])
def test_prune_cli_in_process(tiny_teacher, tmp_path, cache_dir, capsys, extra, paradigm, criterion):
    out = tmp_path / "pruned"
    args = prune_args(tiny_teacher, out, "--paradigm", paradigm, "--criterion", criterion, *extra, cache=cache_dir)
    assert cli.main(args) == 0
    stdout = capsys.readouterr().out
    model, plan = check_checkpoint(out, stdout, paradigm, criterion)
    if criterion == "taylor":
        assert "calibration: 10 random samples" in stdout  # the study's default for Taylor
        assert plan.layers == [1, 2] and plan.round_to == 2
        assert all(n is None or len(n) % 2 == 0 for n in plan.kept_neurons)
    if criterion in ("l2", "random"):
        assert "calibration: none" in stdout
    if paradigm == "layerwise":
        assert plan.requested_ratio is None and len(plan.kept_layers) == plan.num_layers - 1
        assert "requested LM ratio n/a" in stdout


BAD = {
    "ratio-one": (["--paradigm", "layerwise", "--criterion", "bi", "--ratio", "1"], "argument --ratio: must be a finite number >= 0 and < 1; got 1"),
    "ratio-negative": (["--paradigm", "widthwise", "--criterion", "l1", "--ratio", "-0.1"],
                       "argument --ratio: must be a finite number >= 0 and < 1; got -0.1"),
    "ratio-text": (["--paradigm", "layerwise", "--criterion", "bi", "--ratio", "half"], "got 'half'"),
    "ratio-missing": (["--paradigm", "layerwise", "--criterion", "bi"], "--ratio is required"),
    "paradigm": (["--paradigm", "depthwise", "--criterion", "bi", "--ratio", "0.3"],
                 "argument --paradigm: invalid choice: 'depthwise'"),
    "criterion": (["--paradigm", "layerwise", "--criterion", "taylor", "--ratio", "0.3"],
                  "--criterion must be one of bi, angular, loss, deepest, random; got 'taylor'"),
    "criterion-width": (["--paradigm", "widthwise", "--criterion", "bi", "--ratio", "0.3"],
                        "--criterion must be one of taylor, taylor-vector, l1, l2, activation, wanda, random; "
                        "got 'bi'"),
    "layers-syntax": (["--paradigm", "widthwise", "--criterion", "l1", "--ratio", "0.1", "--layers", "1-3"],
                      "--layers must be START:END (decoder block indices, END excluded"),
    "layers-range": (["--paradigm", "widthwise", "--criterion", "l1", "--ratio", "0.1", "--layers", "2:9"],
                     "the model has 4 decoder blocks, so 0 <= START < END <= 4"),
    "layers-empty": (["--paradigm", "layerwise", "--criterion", "bi", "--ratio", "0.1", "--layers", "3:1"],
                     "0 <= START < END <= 4"),
    "n-layers-widthwise": (["--paradigm", "widthwise", "--criterion", "l1", "--n-layers", "1"],
                           "--n-layers applies to layerwise pruning only"),
    "n-layers-too-many": (["--paradigm", "layerwise", "--criterion", "bi", "--n-layers", "4"],
                          "--n-layers must be an integer >= 0 and <= 3; got 4"),
    "ratio-and-n-layers": (["--paradigm", "layerwise", "--criterion", "bi", "--ratio", "0.3", "--n-layers", "1"],
                           "give either --ratio or --n-layers, not both"),
    "round-to-layerwise": (["--paradigm", "layerwise", "--criterion", "bi", "--ratio", "0.3", "--round-to", "8"],
                           "--round-to applies to widthwise pruning only"),
    "calib-samples": (["--paradigm", "layerwise", "--criterion", "bi", "--ratio", "0.3", "--calib-samples", "0"],
                      "argument --calib-samples: must be an integer >= 1; got 0"),
    "round-to": (["--paradigm", "widthwise", "--criterion", "l1", "--ratio", "0.1", "--round-to", "0"],
                 "argument --round-to: must be an integer >= 1; got 0"),
    # found only once the model is loaded: the ratio is beyond what the candidate blocks can give
    "ratio-unreachable": (["--paradigm", "layerwise", "--criterion", "bi", "--ratio", "0.95", "--calib-samples", "4"],
                          "the maximum achievable ratio is"),
}


@pytest.mark.parametrize("name", BAD)
def test_prune_cli_bad_input_exits_2_and_writes_nothing(name, tiny_teacher, tmp_path, cache_dir, capsys):
    extra, message = BAD[name]
    out = tmp_path / "out"
    try:
        code = cli.main(prune_args(tiny_teacher, out, *extra, cache=cache_dir))
    except SystemExit as e:  # argparse: a bad number or choice
        code = e.code
    assert code == 2
    err_lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("studylib prune: error:")]
    assert len(err_lines) == 1 and message in err_lines[0], err_lines
    assert not out.exists()


def test_prune_cli_prunes_a_widthwise_pruned_checkpoint_again(tiny_teacher, tmp_path, cache_dir, capsys):
    """A widthwise checkpoint with per-block widths (registered pruned_llama config) is a valid MODEL."""
    width, both = tmp_path / "width", tmp_path / "width-then-layer"
    extra = ["--calib-samples", "4"]
    assert cli.main(prune_args(tiny_teacher, width, "--paradigm", "widthwise", "--criterion", "taylor",
                               "--ratio", "0.2", *extra, cache=cache_dir)) == 0
    capsys.readouterr()
    assert cli.main(prune_args(width, both, "--paradigm", "layerwise", "--criterion", "bi", "--n-layers", "1",
                               *extra, cache=cache_dir)) == 0
    model, plan = check_checkpoint(both, capsys.readouterr().out, "layerwise", "bi")
    assert model.config.text_config.num_hidden_layers == 3


def test_prune_cli_missing_model_exits_2(tmp_path, capsys):
    out = tmp_path / "out"
    args = ["prune", str(tmp_path / "nope"), "--paradigm", "layerwise", "--criterion", "bi", "--ratio", "0.3",
            "--out", str(out)]
    assert cli.main(args) == 2
    assert "checkpoint folder" in (err := capsys.readouterr().err) and "does not exist" in err, err
    assert not out.exists()


def test_prune_help_lists_every_criterion(capsys):
    with pytest.raises(SystemExit):
        cli.main(["prune", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "layerwise: " + ", ".join(P.criteria("layerwise")) in text
    assert "widthwise: " + ", ".join(P.criteria("widthwise")) in text
    assert "taylor (gradients, 10 samples): " in text and "l1 (no data): Magnitude: S_g" in text
