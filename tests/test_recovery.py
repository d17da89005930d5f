"""Recovery: losses against independent computations, what each mode trains, LoRA merging, subsets,
resuming, the CLI and its input checks."""

import json
import math
import os
from pathlib import Path

import pytest
import torch

from studylib import cli
from studylib import data as D
from studylib import models as M
from studylib import pruning as P
from studylib import recovery as R

N_TRAIN = 200  # the tiny teacher's instruction mix (tests/conftest.py): already in the session cache

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


# ----------------------------------------------------------------------------------------------
# Losses on fixed tensors


def test_masked_ce_matches_a_loop_over_answer_tokens():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 7, generator=g)
    labels = torch.tensor([[-100, -100, 3, 4, -100], [-100, 1, -100, -100, 6]])
    terms = []
    for b in range(2):
        for t in range(4):  # logits at t predict labels at t + 1
            if labels[b, t + 1] != -100:
                terms.append(-torch.log_softmax(logits[b, t], -1)[labels[b, t + 1]])
    assert len(terms) == 4
    assert torch.allclose(R.masked_ce(logits, labels), torch.stack(terms).mean())


def test_kl_with_temperature_matches_the_formula():
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(2, 4, 6, generator=g), torch.randn(2, 4, 6, generator=g) * 3
    mask = torch.tensor([[True, False, True, True], [False, False, True, False]])
    tau = 2.0
    expected = []
    for b, i in mask.nonzero().tolist():
        p = torch.softmax(t[b, i] / tau, -1)
        q = torch.softmax(s[b, i] / tau, -1)
        expected.append(sum(float(p[v] * math.log(p[v] / q[v])) for v in range(6)))
    got = R.kl_loss(s, t, mask, tau)
    assert got.item() == pytest.approx(tau**2 * sum(expected) / len(expected), rel=1e-5)
    # torch's own KL agrees, and identical logits give zero
    ref = torch.nn.functional.kl_div(torch.log_softmax(s[mask] / tau, -1), torch.log_softmax(t[mask] / tau, -1),
                                     log_target=True, reduction="batchmean") * tau**2
    assert got.item() == pytest.approx(ref.item(), rel=1e-5)
    assert R.kl_loss(t, t, mask, tau).item() == pytest.approx(0.0, abs=1e-6)


def test_kd_positions_answer_and_all():
    labels = torch.tensor([[-100, -100, 5, 6, -100]])
    attn = torch.tensor([[1, 1, 1, 1, 0]])
    assert R.kd_positions(labels, attn, "answer").tolist() == [[False, True, True, False]]
    assert R.kd_positions(labels, attn, "all").tolist() == [[True, True, True, False]]
    with pytest.raises(ValueError, match="kl_positions.*answer, all"):
        R.kd_positions(labels, attn, "every")


def test_hidden_mse_with_a_layerwise_mapping():
    plan = P.PruningPlan(paradigm="layerwise", criterion="bi", requested_ratio=0.3, lm_ratio=0.3, model_ratio=0.2,
                         lm_params_before=1, lm_params_after=1, model_params_before=1, model_params_after=1,
                         num_layers=6, widths_before=[], layers=list(range(6)), calibration_fingerprint="",
                         kept_layers=[0, 1, 3, 4])
    pairs = R.layer_pairs(4, 6, plan, extra=[1, -2])
    # an extra student block j is matched to teacher block kept[j]; the final blocks of both models always
    assert pairs == [(1, 1), (2, 3), (3, 5)]
    assert R.layer_pairs(6, 6, None) == [(5, 5)]  # widthwise / unpruned: the same index
    g = torch.Generator().manual_seed(2)
    teacher = [torch.randn(2, 3, 4, generator=g) for _ in range(6)]
    student = [torch.randn(2, 3, 4, generator=g) for _ in range(4)]
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]]).bool()
    got = R.hidden_mse([student[j] for j, _ in pairs], [teacher[m] for _, m in pairs], mask)
    per_pair = []
    for j, m in pairs:
        sq = [float(((student[j][b, t] - teacher[m][b, t]) ** 2).mean()) for b, t in mask.nonzero().tolist()]
        per_pair.append(sum(sq) / len(sq))
    assert got.item() == pytest.approx(sum(per_pair) / len(per_pair), rel=1e-6)


def test_layer_matching_refuses_a_student_not_derived_from_the_teacher():
    with pytest.raises(ValueError, match="no layerwise pruning plan"):
        R.layer_pairs(4, 6, None)
    plan = P.PruningPlan(paradigm="layerwise", criterion="bi", requested_ratio=0.3, lm_ratio=0.3, model_ratio=0.2,
                         lm_params_before=1, lm_params_after=1, model_params_before=1, model_params_after=1,
                         num_layers=8, widths_before=[], layers=list(range(8)), calibration_fingerprint="",
                         kept_layers=[0, 1, 3, 5])
    with pytest.raises(ValueError, match="8 blocks but the teacher has 6"):
        R.layer_pairs(4, 6, plan)
    with pytest.raises(ValueError, match="hidden_layers entry 9"):
        R.layer_pairs(4, 8, plan, extra=[9])


def test_combine():
    ce, kl, hid = torch.tensor(2.0), torch.tensor(1.0), torch.tensor(0.5)
    assert R.combine("ce", 0.5, ce=ce) == 2.0
    assert R.combine("kl", 0.5, kl=kl) == 1.0
    assert R.combine("hidden", 0.5, hidden=hid) == 0.5
    assert R.combine("ce+kl", 0.25, ce=ce, kl=kl) == pytest.approx(0.25 * 1.0 + 0.75 * 2.0)
    assert R.combine("ce+hidden+kl", 0.5, ce=ce, kl=kl, hidden=hid) == pytest.approx(0.5 * 1.5 + 0.5 * 2.0)


# ----------------------------------------------------------------------------------------------
# Subsets


def test_subsets_are_seeded_uniform_and_nested():
    one, five, ten = (R.subset_indices(20000, f, seed=3) for f in (0.01, 0.05, 0.10))
    assert (len(one), len(five), len(ten)) == (200, 1000, 2000)
    assert set(one) <= set(five) <= set(ten)
    assert R.subset_indices(20000, 0.05, seed=3) == five
    assert R.subset_indices(20000, 0.05, seed=4) != five
    assert len(R.subset_indices(20000, 500, seed=3)) == 500 and set(R.subset_indices(20000, 500, 3)) <= set(five)
    assert R.subset_indices(10, 1.0) == list(range(10))
    assert max(five) > 15000 and min(five) < 5000  # spread over the whole mix, not a prefix


@pytest.mark.parametrize("bad, match", [(0.0, r"fraction in \(0, 1\]"), (-0.1, r"fraction in \(0, 1\]"),
                                        (1.5, r"fraction in \(0, 1\]"), (0, "count >= 1"),
                                        (0.0001, "selects no example"), (50, "only 20"), ("5", "fraction")])
def test_bad_fractions(bad, match):
    with pytest.raises(ValueError, match=match):
        R.subset_indices(20, bad) if bad != 0.0001 else R.subset_indices(20, bad)


def test_parse_fraction():
    assert R.parse_fraction("5%") == pytest.approx(0.05)
    assert R.parse_fraction("0.05") == 0.05 and R.parse_fraction("1.0") == 1.0
    assert R.parse_fraction("500") == 500 and isinstance(R.parse_fraction("500"), int)
    with pytest.raises(ValueError, match="--data-fraction 'lots'"):
        R.parse_fraction("lots")


@pytest.mark.parametrize("field, value, match", [
    ("train", "adapter", "train must be one of projector, lora, full; got 'adapter'"),
    ("loss", "mse", "loss must be one of ce, kl, hidden, ce\\+kl.*got 'mse'"),
    ("kl_positions", "image", "kl_positions must be one of answer, all; got 'image'"),
    ("teacher_input", "both", "teacher_input must be one of own, student; got 'both'"),
    ("alpha", 1.5, r"alpha must be a finite number >= 0 and <= 1; got 1.5"),
    ("temperature", 0.0, "temperature must be a finite number > 0; got 0"),
    ("temperature", float("inf"), "temperature must be a finite number > 0; got inf"),
    ("lr", float("inf"), "lr must be a finite number > 0; got inf"),
    ("lr", float("nan"), "lr must be a finite number > 0; got nan"),
    ("epochs", 0, "epochs must be a finite number > 0; got 0"),
    ("batch_size", 0, "batch_size must be an integer >= 1; got 0"),
    ("save_steps", -1, "save_steps must be an integer >= 0; got -1"),
    ("data_fraction", float("nan"), "data_fraction=nan must be a fraction"),
])
def test_bad_config(field, value, match):
    with pytest.raises(ValueError, match=match):
        R.check_config(R.RecoveryConfig(**{field: value}))


# ----------------------------------------------------------------------------------------------
# Training on the tiny teacher


@pytest.fixture(scope="module")
def setting(tiny_teacher, cache_dir):
    """The tiny teacher, its mix, and a 50 % layerwise plan (BI) of it."""
    teacher, processor = M.load(tiny_teacher)
    data = D.build_dataset("train", N_TRAIN, 0, cache_dir)
    calib = P.calibration_batches(processor, 4, 0, cache_dir=cache_dir, n_train=N_TRAIN)
    student, _ = M.load(tiny_teacher)
    plan = P.prune(student, "layerwise", "bi", 0.5, calib).plan
    return dict(path=tiny_teacher, teacher=teacher, processor=processor, data=data, plan=plan, calib=calib)


def pruned(setting, paradigm="layerwise"):
    model, _ = M.load(setting["path"])
    if paradigm == "layerwise":
        return P.apply_plan(model, setting["plan"]), setting["plan"]
    result = P.prune(model, "widthwise", "l2", 0.3, [])
    return result.model, result.plan


def quick(**kw):
    base = dict(data_fraction=64, epochs=1, batch_size=8, lr=1e-3, save_steps=0)
    return R.RecoveryConfig(**(base | kw))


def test_projector_only_changes_only_projector_weights(setting, tmp_path):
    student, plan = pruned(setting)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    R.recover(student, setting["teacher"], setting["data"], quick(train="projector", loss="ce+kl"),
              tmp_path / "out", setting["processor"], plan=plan)
    after, _ = M.load(tmp_path / "out")
    changed = {k for k, v in after.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all("multi_modal_projector" in k for k in changed), sorted(changed)[:5]


def test_full_training_keeps_the_vision_tower_frozen(setting, tmp_path):
    student, plan = pruned(setting)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    R.recover(student, None, setting["data"], quick(train="full", loss="ce"), tmp_path / "out",
              setting["processor"], plan=plan)
    after, _ = M.load(tmp_path / "out")
    changed = {k for k, v in after.state_dict().items() if not torch.equal(v, before[k])}
    assert not any("vision_tower" in k for k in changed)
    assert any("language_model" in k for k in changed) and any("multi_modal_projector" in k for k in changed)


def test_lora_is_merged_on_save_and_reloads_with_equal_logits(setting, tmp_path):
    student, plan = pruned(setting, "widthwise")
    original = {k: v.clone() for k, v in student.state_dict().items()}
    result = R.recover(student, setting["teacher"], setting["data"],
                       quick(train="lora", loss="ce+hidden+kl", lora_rank=4), tmp_path / "out",
                       setting["processor"], plan=plan)
    files = {p.name for p in (tmp_path / "out").iterdir()}
    assert "adapter_config.json" not in files and "model.safetensors" in files
    reloaded, _ = M.load(tmp_path / "out")
    assert not any("lora" in k for k in reloaded.state_dict())
    assert set(reloaded.state_dict()) == set(original)
    changed = [k for k, v in reloaded.state_dict().items() if not torch.equal(v, original[k])]
    assert any("language_model" in k and "proj" in k for k in changed)  # the adapters were merged in
    batch = {k: v for k, v in setting["calib"][0].items() if k != "labels"}
    merged = student.merge_and_unload() if hasattr(student, "merge_and_unload") else student
    with torch.no_grad():
        a = reloaded(**batch).logits
        b = merged.eval()(**batch).logits
    assert torch.allclose(a, b, atol=1e-5)
    assert result.metrics["layer_pairs"] == [(len(plan.widths_before) - 1,) * 2]


def test_end_to_end_recovery_lowers_the_training_loss(setting, tmp_path):
    student, plan = pruned(setting)
    result = R.recover(student, setting["teacher"], setting["data"],
                       quick(train="full", loss="ce+hidden", data_fraction=0.5, epochs=2), tmp_path / "out",
                       setting["processor"], plan=plan)
    m = result.metrics
    assert m["examples"] == N_TRAIN // 2 and m["steps"] == math.ceil(2 * (N_TRAIN // 2) / 8)
    assert m["train_ce_after"] < m["train_ce_before"] - 0.05, m
    assert m["layer_pairs"] == [(len(plan.kept_layers) - 1, plan.num_layers - 1)]
    assert result.log[-1]["loss_hidden"] > 0
    assert {"loss_ce", "loss_hidden"} <= set(result.log[-1])
    saved = json.loads((tmp_path / "out" / "recovery_metrics.json").read_text())
    assert saved["train_ce_after"] == m["train_ce_after"]
    assert P.PruningPlan.load(tmp_path / "out" / "pruning_plan.json") == plan
    assert not (tmp_path / "out" / "_trainer").exists()


def test_teacher_can_read_the_students_projector_output(setting, tmp_path):
    student, plan = pruned(setting)
    result = R.recover(student, setting["teacher"], setting["data"],
                       quick(train="projector", loss="kl", teacher_input="student", data_fraction=16),
                       tmp_path / "out", setting["processor"], plan=plan)
    assert math.isfinite(result.log[-1]["loss_kl"])


def test_same_seed_same_result(setting, tmp_path):
    losses = []
    for run in ("a", "b"):
        student, plan = pruned(setting)
        losses.append(R.recover(student, None, setting["data"], quick(train="lora", loss="ce", data_fraction=32),
                                tmp_path / run, setting["processor"], plan=plan).metrics["train_ce_after"])
    assert losses[0] == losses[1]


def crash_at_step_5(setting, cfg, out, monkeypatch) -> None:
    """Run `recover` with a Trainer that raises KeyboardInterrupt at the end of step 5 (a Ctrl-C)."""
    from transformers import TrainerCallback

    class Crash(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 5:
                raise KeyboardInterrupt

    make = R.trainer_class

    def crashing():
        class CrashingTrainer(make()):
            def __init__(self, *a, **kw):
                super().__init__(*a, callbacks=[Crash()], **kw)
        return CrashingTrainer

    with monkeypatch.context() as m:
        m.setattr(R, "trainer_class", crashing)
        student, plan = pruned(setting)
        with pytest.raises(KeyboardInterrupt):
            R.recover(student, None, setting["data"], cfg, out, setting["processor"], plan=plan)


@pytest.mark.parametrize("train", ["full", "lora"])
def test_an_interrupted_run_resumes_from_its_last_checkpoint(setting, tmp_path, monkeypatch, train):
    cfg = quick(train=train, loss="ce", data_fraction=48, save_steps=2)  # 6 steps, checkpoints at 2 and 4
    crash_at_step_5(setting, cfg, tmp_path / "out", monkeypatch)
    assert (tmp_path / "out" / "_trainer" / "checkpoint-4").is_dir()
    assert not (tmp_path / "out" / "recovery_metrics.json").exists()
    student, plan = pruned(setting)
    resumed = R.recover(student, None, setting["data"], cfg, tmp_path / "out", setting["processor"], plan=plan)
    assert resumed.metrics["resumed"] and resumed.log[-1]["step"] == 6
    student, plan = pruned(setting)
    straight = R.recover(student, None, setting["data"], cfg, tmp_path / "straight", setting["processor"], plan=plan)
    assert not straight.metrics["resumed"]
    a, _ = M.load(tmp_path / "out")
    b, _ = M.load(tmp_path / "straight")
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(va, vb, atol=1e-5), k


def test_a_half_written_checkpoint_is_not_resumed_from(setting, tmp_path, monkeypatch, capsys):
    """A kill or a full disk during a save leaves a checkpoint without trainer_state.json (Trainer writes it
    last) or with truncated weights: the rerun resumes from the newest complete one and says so."""
    cfg = quick(train="full", loss="ce", data_fraction=48, save_steps=2)  # 6 steps, checkpoints at 2 and 4
    crash_at_step_5(setting, cfg, tmp_path / "out", monkeypatch)
    trainer_dir = tmp_path / "out" / "_trainer"
    assert [p.name for p in trainer_dir.iterdir()] == ["checkpoint-4"]  # save_total_limit=1
    cut = trainer_dir / "checkpoint-6"  # the save of step 6 was cut short: weights truncated, no trainer state
    cut.mkdir()
    data = (trainer_dir / "checkpoint-4" / "model.safetensors").read_bytes()
    (cut / "model.safetensors").write_bytes(data[: len(data) // 2])
    student, plan = pruned(setting)
    resumed = R.recover(student, None, setting["data"], cfg, tmp_path / "out", setting["processor"], plan=plan)
    assert "checkpoint-6 was not written to the end" in capsys.readouterr().out
    assert resumed.metrics["resumed_from"] == "checkpoint-4" and [r["step"] for r in resumed.log] == [1, 2, 3, 4, 5, 6]
    student, plan = pruned(setting)
    straight = R.recover(student, None, setting["data"], cfg, tmp_path / "straight", setting["processor"], plan=plan)
    a, _ = M.load(tmp_path / "out")
    b, _ = M.load(tmp_path / "straight")
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(va, vb, atol=1e-5), k


def test_no_complete_checkpoint_means_a_fresh_start(tmp_path):
    for name, files in (("checkpoint-2", {"trainer_state.json": "{"}), ("checkpoint-4", {"model.safetensors": "x"}),
                        ("checkpoint-6", {})):
        (tmp_path / name).mkdir()
        for f, text in files.items():
            (tmp_path / name / f).write_text(text)
    said = []
    assert R.last_complete_checkpoint(tmp_path, log=said.append) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "incomplete-checkpoint-2", "incomplete-checkpoint-4", "incomplete-checkpoint-6"]
    assert len(said) == 3 and all("not resumed from" in m for m in said)


def test_kill_9_during_recovery_then_rerun_gives_the_uninterrupted_weights(setting, tmp_path, cache_dir):
    """`studylib recover` killed with SIGKILL mid-training (saving a checkpoint every 2 steps), rerun to the
    end: the same final weights as a run that was never interrupted."""
    import signal
    import subprocess
    import sys
    import time

    student_dir = tmp_path / "student"
    student, plan = pruned(setting)
    P.save_pruned(student, plan, None, student_dir, processor=setting["processor"])
    env = dict(os.environ, OMP_NUM_THREADS="1")

    def args(out):
        return [sys.executable, "-m", "studylib.cli", "recover", str(student_dir), "--train", "full", "--loss", "ce",
                "--data-fraction", "160", "--batch-size", "4", "--lr", "1e-3", "--save-steps", "2",
                "--n-train", str(N_TRAIN), "--cache", str(cache_dir), "--out", str(out)]

    killed = tmp_path / "killed"
    proc = subprocess.Popen(args(killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not (killed / "_trainer" / "checkpoint-4" / "trainer_state.json").exists():
        assert proc.poll() is None and time.time() < deadline, "the run ended before it could be killed"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "recovery_metrics.json").exists()
    for out in (killed, tmp_path / "straight"):
        r = subprocess.run(args(out), env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    assert json.loads((killed / "recovery_metrics.json").read_text())["resumed"]
    a, _ = M.load(killed)
    b, _ = M.load(tmp_path / "straight")
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(va, vb, atol=1e-5), k


# ----------------------------------------------------------------------------------------------
# Bad pairs (before any training starts)


def test_different_vocabularies_are_refused(setting):
    student, plan = pruned(setting)
    teacher, _ = M.load(setting["path"])
    teacher.resize_token_embeddings(teacher.get_input_embeddings().num_embeddings + 8)
    with pytest.raises(ValueError, match="vocabularies differ"):
        R.check_pair(student, teacher, R.RecoveryConfig(loss="ce+kl"), plan)
    other = M.build_processor("llava-tiny")
    vocab = other.tokenizer.get_vocab()
    other.tokenizer.get_vocab = lambda: {**vocab, "zzz": -1}
    with pytest.raises(ValueError, match="tokenizers differ"):
        R.check_pair(student, setting["teacher"], R.RecoveryConfig(loss="kl"), plan, setting["processor"], other)


def test_hidden_kd_between_different_hidden_sizes_is_refused(setting):
    student, plan = pruned(setting)
    wide = M.build_model("llava-small", setting["processor"])  # hidden 192 against llava-tiny's 64
    assert P.describe_lm(wide).text_config.hidden_size != P.describe_lm(student).text_config.hidden_size
    with pytest.raises(ValueError, match="equal hidden sizes"):
        R.check_pair(student, wide, R.RecoveryConfig(loss="ce+hidden"), plan)
    R.check_pair(student, wide, R.RecoveryConfig(loss="ce+kl"), plan)  # logits alone do not need it


def test_kd_without_teacher_is_refused(setting, tmp_path):
    student, plan = pruned(setting)
    with pytest.raises(ValueError, match="pass the unpruned model as teacher"):
        R.recover(student, None, setting["data"], quick(loss="kl"), tmp_path / "out", setting["processor"], plan)
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------------
# Command line


def recover_args(student, out, *extra, cache=None):
    return ["recover", str(student), "--out", str(out), "--n-train", str(N_TRAIN), "--batch-size", "8",
            "--save-steps", "0", *(["--cache", str(cache)] if cache else []), *extra]


def test_cli_recover_end_to_end(setting, tmp_path, capsys, cache_dir):
    student = tmp_path / "pruned"
    assert cli.main(["prune", str(setting["path"]), "--paradigm", "layerwise", "--criterion", "bi",
                     "--ratio", "0.5", "--n-train", str(N_TRAIN), "--cache", str(cache_dir), "--out", str(student)]) == 0
    out = tmp_path / "recovered"
    code = cli.main(recover_args(student, out, "--teacher", str(setting["path"]), "--train", "lora",
                                 "--loss", "ce+hidden", "--data-fraction", "25%", "--lr", "1e-3", cache=cache_dir))
    stdout = capsys.readouterr().out
    assert code == 0, stdout
    assert "recovered on 50 of 200 examples" in stdout
    for name in ("model.safetensors", "tokenizer.json", "pruning_plan.json", "train_log.json", "recovery_metrics.json"):
        assert (out / name).is_file(), name
    model, _ = M.load(out)
    assert len(P.describe_lm(model).layers) == len(P.PruningPlan.load(student / "pruning_plan.json").kept_layers)
    assert cli.main(recover_args(student, out, "--train", "lora", "--loss", "ce", cache=cache_dir)) == 0
    assert "already a finished recovery" in capsys.readouterr().out


@pytest.mark.parametrize("extra, match", [
    (["--train", "adapter", "--loss", "ce"], "invalid choice: 'adapter'"),
    (["--train", "lora", "--loss", "l2"], "invalid choice: 'l2'"),
    (["--train", "lora", "--loss", "ce", "--data-fraction", "0"], "count >= 1"),
    (["--train", "lora", "--loss", "ce", "--data-fraction", "1.5"], r"fraction in \(0, 1\]"),
    (["--train", "lora", "--loss", "ce", "--data-fraction", "0.00001"], "selects no example"),
    (["--train", "lora", "--loss", "ce+kl"], "pass --teacher DIR"),
    (["--train", "lora", "--loss", "ce", "--alpha", "2"], r"argument --alpha: must be a finite number >= 0 and <= 1"),
    (["--train", "lora", "--loss", "ce", "--lr", "inf"], r"argument --lr: must be a finite number > 0; got inf"),
    (["--train", "lora", "--loss", "ce", "--save-steps", "-1"], r"argument --save-steps: must be an integer >= 0"),
    (["--train", "lora", "--loss", "ce", "--lora-targets", "wq"], "lora_targets \\['wq'\\].*q_proj"),
])
def test_cli_bad_input_is_reported_before_training(setting, tmp_path, capsys, extra, match, cache_dir):
    import re

    out = tmp_path / "never"
    try:
        code = cli.main(recover_args(setting["path"], out, *extra, cache=cache_dir))
    except SystemExit as e:  # argparse choices
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and re.search(match, err), err
    assert not (out / "model.safetensors").exists()


def test_cli_missing_student_folder(tmp_path, capsys):
    assert cli.main(recover_args(tmp_path / "nope", tmp_path / "out", "--train", "full", "--loss", "ce")) == 2
    assert "STUDENT" in capsys.readouterr().err


def test_the_studys_kl_scaling_sums_per_sequence():
    """sequence_sum = token_mean x (positions compared / sequences): the study's code sums the KL over each
    sequence's positions and the vocabulary, then averages over sequences."""
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(3, 5, 7, generator=g), torch.randn(3, 5, 7, generator=g)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 0], [0, 1, 0, 0, 0]], dtype=torch.bool)
    mean = R.kl_loss(s, t, mask, 2.0)
    total = R.kl_loss(s, t, mask, 2.0, scale="sequence_sum")
    assert torch.isclose(total, mean * mask.sum() / 3)
    with pytest.raises(ValueError, match="kl_scale"):
        R.kl_loss(s, t, mask, 2.0, scale="sum")


def test_scale_free_hidden_loss_ignores_the_residual_scale():
    """Scaling both models' states by c multiplies the plain MSE by c^2 and leaves the scale-free one."""
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(2, 4, 6, generator=g), torch.randn(2, 4, 6, generator=g)
    mask = torch.ones(2, 4, dtype=torch.bool)
    plain, free = R.hidden_mse([a], [b], mask), R.hidden_mse([a], [b], mask, scale_free=True)
    assert torch.isclose(R.hidden_mse([1000 * a], [1000 * b], mask), plain * 1e6)
    assert torch.isclose(R.hidden_mse([1000 * a], [1000 * b], mask, scale_free=True), free)
    assert torch.isclose(free, plain / b.pow(2).mean())


@pytest.mark.parametrize("target", ["final_norm", "blocks", "scale_free"])
def test_hidden_targets_train(setting, tmp_path, target):
    """Each hidden-state target trains end to end: the study's (the last state after the final norm, the
    default), the block outputs before it, and the scale-free one."""
    student, plan = pruned(setting)
    result = R.recover(student, setting["teacher"], setting["data"],
                       quick(train="projector", loss="ce+hidden", hidden_target=target, data_fraction=16),
                       tmp_path / "out", setting["processor"], plan=plan)
    assert result.metrics["config"]["hidden_target"] == target
    assert math.isfinite(result.log[-1]["loss_hidden"]) and result.log[-1]["loss_hidden"] > 0
    with pytest.raises(ValueError, match="hidden_target"):
        R.check_config(quick(loss="ce+hidden", hidden_target="after_norm"))


def test_the_last_hidden_state_is_after_the_final_norm():
    """What `hidden_target="final_norm"` matches, as the study's code: `output_hidden_states[-1]` is the
    final norm of the last block's output (not the block output itself)."""
    from test_pruning import batches, llava

    model = llava()
    last = P.describe_lm(model).blocks[-1].layer
    seen = {}
    handle = last.register_forward_hook(lambda module, args, output: seen.setdefault("out", P.hidden_out(output)))
    with torch.no_grad():
        states = model(**batches()[0], output_hidden_states=True).hidden_states
    handle.remove()
    assert torch.allclose(states[-1], model.model.language_model.norm(seen["out"]), atol=1e-6)
    assert not torch.allclose(states[-1], seen["out"])
