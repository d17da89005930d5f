"""Bad command lines and damaged files: every one exits with code 2 and a one-line message that names the flag
or the file, before any work is done, and nothing already written is touched."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from studylib import cli
from studylib import data as D
from studylib import llava_json
from studylib import models as M
from studylib import pruning as P
from studylib import validate as V

ROOT = Path(__file__).resolve().parent.parent
N_TRAIN = 200  # the tiny teacher's mix (tests/conftest.py)


def run(args: list[str], capsys) -> tuple[int, str]:
    """`studylib ARGS` in this process: (exit code, stderr)."""
    try:
        code = cli.main([str(a) for a in args])
    except SystemExit as e:  # argparse: a bad number, choice or a missing flag
        code = e.code
    return code, capsys.readouterr().err


def assert_clear_error(code: int, err: str, *needles: str) -> None:
    lines = [ln for ln in err.splitlines() if re.match(r"studylib \w+: error: ", ln)]
    assert code == 2 and len(lines) == 1, err
    assert "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


# ----------------------------------------------------------------------------------------------
# Numbers: every numeric flag of every subcommand at 0, negative, inf, nan, a fraction and a word

INT, POS, UNIT = "int", "positive", "unit"  # integer >= min; finite > 0; finite in [0, 1] (RATIO: [0, 1))
NUMERIC_FLAGS = {
    "data": {"--n-train": (INT, 1), "--n-bench": (INT, 1), "--seed": (INT, 0)},
    "teacher": {"--seed": (INT, 0), "--max-steps": (INT, 1), "--stage1-steps": (INT, 0), "--n-train": (INT, 1),
                "--batch-size": (INT, 1), "--stage1-lr": (POS, None), "--stage2-lr": (POS, None)},
    "evaluate": {"--n": (INT, 1), "--seed": (INT, 0), "--limit": (INT, 1)},
    "prune": {"--ratio": ("ratio", None), "--calib-samples": (INT, 1), "--seed": (INT, 0), "--round-to": (INT, 1),
              "--n-layers": (INT, 0), "--n-train": (INT, 1)},
    "bench": {"--new-tokens": (INT, 1), "--repeats": (INT, 1), "--warmup": (INT, 0), "--threads": (INT, 1),
              "--seed": (INT, 0)},
    "recover": {"--alpha": (UNIT, None), "--temperature": (POS, None), "--epochs": (POS, None), "--lr": (POS, None),
                "--batch-size": (INT, 1), "--lora-rank": (INT, 1), "--lora-alpha": (INT, 1), "--seed": (INT, 0),
                "--save-steps": (INT, 0), "--n-train": (INT, 1), "--data-seed": (INT, 0), "--grad-accum": (INT, 1)},
    "sweep": {"--jobs": (INT, 1), "--slurm-gpus": (INT, 1), "--slurm-cpus": (INT, 1), "--slurm-mem-gb": (INT, 1),
              "--slurm-time": (INT, 1)},
}
NUMERIC_FLAGS["study"] = NUMERIC_FLAGS["sweep"]
REQUIRED = {  # the rest of a command line that would otherwise be valid
    "data": [], "teacher": ["--preset", "llava-tiny", "--out", "X"], "evaluate": ["M", "--out", "X.json"],
    "prune": ["M", "--paradigm", "layerwise", "--criterion", "bi", "--out", "X"], "bench": ["M", "--out", "X.json"],
    "recover": ["M", "--train", "lora", "--loss", "ce", "--out", "X"], "sweep": ["C.yaml"], "study": [],
}
VALUES = ["0", "-1", "inf", "-inf", "nan", "1.5", "many", "1e999"]


def is_valid(kind: str, minimum, text: str) -> bool:
    if kind == INT:
        return re.fullmatch(r"-?\d+", text) is not None and int(text) >= minimum
    try:
        x = float(text)
    except ValueError:
        return False
    if x != x or x in (float("inf"), float("-inf")):
        return False
    return {POS: x > 0, UNIT: 0 <= x <= 1, "ratio": 0 <= x < 1}[kind]


BAD_NUMBERS = [(cmd, flag, value) for cmd, flags in NUMERIC_FLAGS.items() for flag, (kind, minimum) in flags.items()
               for value in VALUES if not is_valid(kind, minimum, value)]


def test_the_fuzz_table_covers_every_numeric_flag_of_the_parser():
    """Every flag whose argparse type is one of studylib.validate's number checks is in NUMERIC_FLAGS."""
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for cmd, subparser in sub.choices.items():
        numeric = {a.option_strings[0] for a in subparser._actions
                   if a.option_strings and getattr(a.type, "checks", None) == "number"}
        assert numeric == set(NUMERIC_FLAGS.get(cmd, {})), (cmd, numeric ^ set(NUMERIC_FLAGS.get(cmd, {})))
    assert len(BAD_NUMBERS) > 200


@pytest.mark.parametrize("cmd, flag, value", BAD_NUMBERS, ids=lambda x: str(x))
def test_a_bad_number_exits_2_naming_the_flag(cmd, flag, value, capsys):
    code, err = run([cmd, *REQUIRED[cmd], f"{flag}={value}"], capsys)
    assert_clear_error(code, err, f"argument {flag}:", "must be")


@pytest.mark.parametrize("args, needle", [
    (["evaluate", "M", "--benchmarks", ",", "--out", "X.json"], "argument --benchmarks: must be a comma-separated"),
    (["evaluate", "M", "--benchmarks", "pope,popr", "--out", "X.json"], "'popr' is not one (did you mean 'pope'?)"),
    (["evaluate", "M", "--device", "bogus", "--out", "X.json"], "argument --device: must be cpu, cuda, cuda:N or mps"),
    (["prune", "M", "--paradigm", "depthwise", "--criterion", "bi", "--ratio", "0.3", "--out", "X"],
     "argument --paradigm: invalid choice"),
    (["prune", "M", "--paradigm", "layerwise", "--criterion", "bi", "--ratio", "0.3", "--device", "gpu", "--out", "X"],
     "argument --device"),
    (["recover", "M", "--train", "adapter", "--loss", "ce", "--out", "X"], "argument --train: invalid choice"),
    (["recover", "M", "--train", "lora", "--loss", "ce", "--lora-targets", ",", "--out", "X"],
     "argument --lora-targets"),
    (["recover", "M", "--train", "lora", "--loss", "ce", "--hidden-layers", "a,b", "--out", "X"], "--hidden-layers"),
    (["recover", "M", "--train", "lora", "--loss", "ce", "--data-fraction", "half", "--out", "X"], "--data-fraction"),
    (["recover", "M", "--train", "lora", "--loss", "ce", "--data-fraction", "0", "--out", "X"], "--data-fraction"),
    (["recover", "M", "--train", "lora", "--loss", "ce", "--data-fraction", "nan", "--out", "X"], "--data-fraction"),
    (["teacher", "--preset", "llava-huge", "--out", "X"], "argument --preset: invalid choice: 'llava-huge'"),
    (["sweep", "C.yaml", "--executor", "pbs"], "argument --executor: invalid choice"),
    (["bench", "M", "--dtype", "float8", "--out", "X.json"], "argument --dtype: invalid choice"),
])
def test_bad_names_and_lists_exit_2_naming_the_flag(args, needle, capsys):
    assert_clear_error(*run(args, capsys), needle)


def test_help_and_argument_errors_do_not_import_torch():
    """What makes `studylib --help` answer at once (benchmarks/bench_cli.py measures it)."""
    code = ("import sys; from studylib import cli\n"
            "try:\n    cli.main(['recover', 'M', '--train', 'lora', '--loss', 'ce', '--lr', 'inf', '--out', 'X'])\n"
            "except SystemExit as e:\n    assert e.code == 2\n"
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import'\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "studylib.cli", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and "prune" in r.stdout


def test_the_names_in_validate_are_the_implemented_ones():
    from studylib import pretrained as PT

    assert tuple(M.PRESETS) == V.EMBEDDED_PRESETS and tuple(PT.PRETRAINED_PRESETS) == V.PRETRAINED_PRESETS
    assert tuple(D.BENCHMARKS) == V.BENCHMARKS
    assert tuple(P.CRITERIA) == V.PARADIGMS  # the criteria themselves are pruning's registry (test_registry.py)


# ----------------------------------------------------------------------------------------------
# Damaged checkpoints, given to every command that loads one


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _rewrite_weights(folder: Path, change) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(folder / "model.safetensors")
    save_file(change(dict(state)), folder / "model.safetensors", metadata={"format": "pt"})


def damage(kind: str, folder: Path) -> str:
    """Damage a copy of a checkpoint; return what the error must name."""
    cfg, weights = folder / "config.json", folder / "model.safetensors"
    if kind == "config-not-json":
        cfg.write_text('{"model_type": "llava", ')
        return "config.json is not valid JSON"
    if kind == "config-a-list":
        cfg.write_text("[1, 2]")
        return "config.json holds a JSON list"
    if kind == "config-no-layer-count":
        c = json.loads(cfg.read_text())
        del c["text_config"]["num_hidden_layers"]
        cfg.write_text(json.dumps(c))
        return "text_config.num_hidden_layers"
    if kind == "weights-cut-in-data":
        data = weights.read_bytes()
        weights.write_bytes(data[: len(data) - 1000])
        return "model.safetensors is damaged"
    if kind == "weights-cut-in-header":
        weights.write_bytes(weights.read_bytes()[:20])
        return "model.safetensors is damaged"
    if kind == "weights-empty":
        weights.write_bytes(b"")
        return "model.safetensors is damaged"
    if kind == "weight-missing":
        _rewrite_weights(folder, lambda s: {k: v for k, v in s.items() if "layers.1.mlp.down_proj" not in k})
        return "weights missing"
    if kind == "weight-unexpected":
        _rewrite_weights(folder, lambda s: s | {"model.language_model.extra.weight": torch.zeros(2)})
        return "unexpected weights"
    if kind == "weight-wrong-shape":
        _rewrite_weights(folder, lambda s: s | {k: torch.zeros(3, 3) for k in s if "layers.0.mlp.down_proj" in k})
        return "1 weights of the wrong shape (model.language_model.layers.0.mlp.down_proj.weight)"
    if kind == "processor-config-a-list":
        (folder / "preprocessor_config.json").write_text("[1]")
        return "preprocessor_config.json holds a JSON list"
    if kind == "tokenizer-not-json":
        (folder / "tokenizer.json").write_text("{bad")
        return "the processor (tokenizer and image processor files) does not load"
    if kind == "plan-not-json":
        (folder / "pruning_plan.json").write_text("{")
        return "pruning_plan.json is not a pruning plan written by studylib"
    if kind == "no-weights":
        weights.unlink()
        return "no model weights"
    raise AssertionError(kind)


DAMAGES = ["config-not-json", "config-a-list", "config-no-layer-count", "weights-cut-in-data",
           "weights-cut-in-header", "weights-empty", "weight-missing", "weight-unexpected", "weight-wrong-shape",
           "processor-config-a-list", "tokenizer-not-json", "no-weights"]


def command(cmd: str, model: Path, tmp: Path, cache) -> list:
    common = ["--cache", cache]
    return {
        "evaluate": ["evaluate", model, "--benchmarks", "count", "--n", "4", *common, "--out", tmp / "e.json"],
        "prune": ["prune", model, "--paradigm", "layerwise", "--criterion", "bi", "--n-layers", "1",
                  "--calib-samples", "4", "--n-train", N_TRAIN, *common, "--out", tmp / "pruned"],
        "recover": ["recover", model, "--train", "projector", "--loss", "ce", "--data-fraction", "8",
                    "--n-train", N_TRAIN, *common, "--out", tmp / "rec"],
        "bench": ["bench", model, "--batch-sizes", "1", "--new-tokens", "1", "--repeats", "1", "--warmup", "0",
                  "--out", tmp / "b.json"],
    }[cmd]


@pytest.mark.parametrize("kind", DAMAGES)
@pytest.mark.parametrize("cmd", ["evaluate", "prune", "recover", "bench"])
def test_a_damaged_checkpoint_is_a_clear_error(cmd, kind, tiny_teacher, tmp_path, cache_dir, capsys):
    model = _copy(tiny_teacher, tmp_path / "model")
    needle = damage(kind, model)
    code, err = run(command(cmd, model, tmp_path, cache_dir), capsys)
    assert_clear_error(code, err, needle)
    assert not any(tmp_path.glob("e.json")) and not (tmp_path / "pruned").exists()
    assert not (tmp_path / "rec" / "model.safetensors").exists() and not (tmp_path / "b.json").exists()


def test_a_damaged_teacher_is_a_clear_error(tiny_teacher, tmp_path, cache_dir, capsys):
    student = tmp_path / "student"
    assert run(command("prune", tiny_teacher, tmp_path, cache_dir)[:-1] + [student], capsys)[0] == 0
    teacher = _copy(tiny_teacher, tmp_path / "teacher")
    needle = damage("weights-cut-in-data", teacher)
    code, err = run(["recover", student, "--teacher", teacher, "--train", "projector", "--loss", "ce+kl",
                     "--data-fraction", "8", "--n-train", N_TRAIN, "--cache", cache_dir, "--out", tmp_path / "r"],
                    capsys)
    assert_clear_error(code, err, needle)


def test_a_damaged_pruning_plan_is_a_clear_error(tiny_teacher, tmp_path, cache_dir, capsys):
    student = tmp_path / "student"
    assert run(command("prune", tiny_teacher, tmp_path, cache_dir)[:-1] + [student], capsys)[0] == 0
    needle = damage("plan-not-json", student)
    assert_clear_error(*run(command("recover", student, tmp_path, cache_dir), capsys), needle)


def test_a_damaged_data_cache_is_made_again(tmp_path, capsys):
    first = D.build_dataset("count", 6, 0, tmp_path)
    ids, fingerprint = list(first["id"]), first._fingerprint  # before the file it maps is damaged
    (arrow,) = (tmp_path / f"v{D.GENERATOR_VERSION}-count-n6-s0").glob("*.arrow")
    arrow.write_bytes(arrow.read_bytes()[:100])
    again = D.build_dataset("count", 6, 0, tmp_path)
    assert "does not load" in capsys.readouterr().out
    assert list(again["id"]) == ids and again._fingerprint == fingerprint


def test_an_output_file_may_be_written_again(tmp_path):
    (tmp_path / "e.json").write_text("{}")
    assert V.output_path("--out", tmp_path / "e.json", kind="file") == (tmp_path / "e.json").absolute()
    with pytest.raises(ValueError, match="is a file, not a folder"):
        V.output_path("--out", tmp_path / "e.json" / "x.json", kind="file")


def test_the_library_refuses_missing_weights_too(tiny_teacher, tmp_path):
    model = _copy(tiny_teacher, tmp_path / "model")
    damage("weight-missing", model)
    with pytest.raises(ValueError, match=r"1 weights missing \(model.language_model.layers.1.mlp.down_proj.weight\)"):
        M.load(model)


# ----------------------------------------------------------------------------------------------
# Outputs that would overwrite inputs, references that are not results, devices that are not here


def _digest(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.mark.parametrize("where", ["same", "inside"])
def test_prune_refuses_to_write_over_its_model(where, tiny_teacher, tmp_path, cache_dir, capsys):
    model = _copy(tiny_teacher, tmp_path / "model")
    before = _digest(model)
    out = model if where == "same" else model / "pruned"
    code, err = run(command("prune", model, tmp_path, cache_dir)[:-1] + [out], capsys)
    assert_clear_error(code, err, "--out", "would overwrite the input")
    assert _digest(model) == before and not (model / "pruned").exists()


def test_a_symlink_to_the_model_is_the_model(tiny_teacher, tmp_path, cache_dir, capsys):
    model = _copy(tiny_teacher, tmp_path / "model")
    (tmp_path / "link").symlink_to(model)
    code, err = run(command("prune", model, tmp_path, cache_dir)[:-1] + [tmp_path / "link"], capsys)
    assert_clear_error(code, err, "would overwrite the input")


def test_recover_refuses_to_write_over_its_student_or_teacher(tiny_teacher, tmp_path, cache_dir, capsys):
    for out in (tiny_teacher, tmp_path / "s"):
        args = ["recover", tmp_path / "s" if out != tiny_teacher else tiny_teacher, "--teacher", tiny_teacher,
                "--train", "lora", "--loss", "ce+kl", "--n-train", N_TRAIN, "--out", out]
        (tmp_path / "s").mkdir(exist_ok=True)
        assert_clear_error(*run(args, capsys), "would overwrite the input")


def test_evaluate_checks_reference_and_out_before_evaluating(tiny_teacher, tmp_path, cache_dir, capsys, monkeypatch):
    from studylib import evaluation as E

    monkeypatch.setattr(E, "evaluate", lambda *a, **k: pytest.fail("evaluated before the inputs were checked"))
    base = ["evaluate", tiny_teacher, "--benchmarks", "count", "--n", "4", "--cache", cache_dir]
    cases = {"not-json": "{", "a-list": "[]", "no-table": '{"model": "x"}', "bad-rows": '{"table": [{"a": 1}]}'}
    for name, text in cases.items():
        (tmp_path / f"{name}.json").write_text(text)
        code, err = run([*base, "--reference", tmp_path / f"{name}.json", "--out", tmp_path / "o.json"], capsys)
        assert_clear_error(code, err, "--reference")
    code, err = run([*base, "--reference", tmp_path / "missing.json", "--out", tmp_path / "o.json"], capsys)
    assert_clear_error(code, err, "--reference", "no such file")
    other = {"table": [{"benchmark": "pope", "metric": "accuracy", "score": 0.8, "primary": True}]}
    (tmp_path / "other.json").write_text(json.dumps(other))
    code, err = run([*base, "--reference", tmp_path / "other.json", "--out", tmp_path / "o.json"], capsys)
    assert_clear_error(code, err, "has no positive score for count")
    code, err = run([*base, "--out", tmp_path], capsys)
    assert_clear_error(code, err, "--out", "is a folder")
    code, err = run([*base, "--reference", tmp_path / "other.json", "--out", tmp_path / "other.json"], capsys)
    assert_clear_error(code, err, "would overwrite the input")
    code, err = run([*base, "--out", tiny_teacher / "config.json"], capsys)
    assert_clear_error(code, err, "would overwrite the input")
    assert V.output_path("--out", tiny_teacher / "new-eval.json", [tiny_teacher], kind="file")  # beside: fine


def test_an_unwritable_out_is_a_clear_error(tiny_teacher, tmp_path, cache_dir, capsys, monkeypatch):
    import os

    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p).startswith(str(tmp_path)) else real(p, mode))
    code, err = run(command("prune", tiny_teacher, tmp_path, cache_dir), capsys)
    assert_clear_error(code, err, "--out", "cannot be written")


@pytest.mark.parametrize("device", ["cuda", "cuda:1", "mps"])
def test_a_device_that_is_not_here_names_the_ones_that_are(device, tiny_teacher, tmp_path, cache_dir, capsys,
                                                           monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1 if device == "cuda:1" else 0)
    args = command("evaluate", tiny_teacher, tmp_path, cache_dir) + ["--device", device]
    present = "cpu, cuda:0" if device == "cuda:1" else "cpu"
    assert_clear_error(*run(args, capsys), f"--device {device} is not available on this machine; available: {present}")


def test_a_ratio_that_removes_no_block_says_the_smallest_that_does(tiny_teacher, tmp_path, cache_dir, capsys):
    args = command("prune", tiny_teacher, tmp_path, cache_dir)
    args[args.index("--n-layers"):args.index("--n-layers") + 2] = ["--ratio", "0.01"]
    code, err = run(args, capsys)
    assert_clear_error(code, err, "ratio=0.01 removes no decoder block", "a ratio above")
    assert not (tmp_path / "pruned").exists()


# ----------------------------------------------------------------------------------------------
# LLaVA-format data with bad rows and images


def _llava(tmp_path: Path, image) -> Path:
    (tmp_path / "images").mkdir(exist_ok=True)
    D.render_text("12", __import__("numpy").random.default_rng(0)).save(tmp_path / "images" / "ok.png")
    row = {"id": "r1", "conversations": [{"from": "human", "value": "<image>\nWhat number?"},
                                          {"from": "gpt", "value": "12"}]}
    if image is not None:
        row["image"] = image
    path = tmp_path / "data.json"
    path.write_text(json.dumps([row]))
    return path


@pytest.mark.parametrize("image, message", [
    (7, "'image' must be a file name relative to the image folder; got 7"),
    (["a.png"], "'image' must be a file name"),
    ("/etc/hostname", "must be a relative path inside the image folder"),
    ("../outside.png", "must be a relative path inside the image folder"),
    ("images/missing.png", "missing image"),
    ("images/corrupt.png", "does not decode"),
    ("images/empty.png", "does not decode"),
])
def test_bad_llava_images_name_the_row_and_the_file(image, message, tmp_path, capsys):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    (tmp_path / "images" / "empty.png").write_bytes(b"")
    path = _llava(tmp_path, image)
    with pytest.raises(ValueError, match=re.escape(message)) as e:
        llava_json.load(path)
    assert "row id='r1'" in str(e.value)
    assert len(llava_json.load(_llava(tmp_path, "images/ok.png"))) == 1


def test_bad_llava_files_are_clear_errors(tmp_path, tiny_teacher, cache_dir, capsys):
    (tmp_path / "bad.json").write_text("[{")
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00")
    for name, needle in (("bad.json", "is not valid JSON"), ("binary.json", "not a UTF-8 text file"),
                         ("none.json", "no such file")):
        args = command("prune", tiny_teacher, tmp_path, cache_dir) + ["--data", tmp_path / name]
        assert_clear_error(*run(args, capsys), name, needle)


def test_a_half_written_data_row_is_refused_through_the_cli(tmp_path, tiny_teacher, cache_dir, capsys):
    path = _llava(tmp_path, "images/../../x.png")
    args = command("prune", tiny_teacher, tmp_path, cache_dir) + ["--data", path]
    assert_clear_error(*run(args, capsys), "row id='r1'", "relative path inside the image folder")
    assert not (tmp_path / "pruned").exists()



@pytest.mark.parametrize("field, value, message", [
    ("preset", "llava-huge", "preset must be one of llava-tiny, bunny-tiny, llava-small, gemma-270m; got 'llava-huge'"),
    ("max_steps", -1, "max_steps must be an integer >= 1; got -1"),
    ("stage1_steps", 2.5, "stage1_steps must be an integer >= 0; got 2.5"),
    ("lr", float("inf"), "lr must be a finite number > 0; got inf"),
    ("stage2_lr", 0.0, "stage2_lr must be a finite number > 0; got 0"),
    ("batch_size", 0, "batch_size must be an integer >= 1; got 0"),
])
def test_a_bad_teacher_config_is_refused_before_anything_runs(field, value, message, tmp_path):
    """What a notebook's parameters (or a sweep's YAML) reach: the same checks as the command line."""
    from studylib import teacher as T

    cfg = T.TeacherConfig(**{"preset": "llava-tiny", field: value})
    with pytest.raises(ValueError, match=re.escape(message)):
        T.ensure_teacher(cfg, tmp_path)
    assert not any(tmp_path.iterdir())


def test_recover_help_shows_the_recovery_defaults(capsys):
    from studylib.recovery import RecoveryConfig

    with pytest.raises(SystemExit):
        cli.main(["recover", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    d0 = RecoveryConfig()
    for flag, value in (("--alpha", d0.alpha), ("--lr", d0.lr), ("--lora-rank", d0.lora_rank),
                        ("--data-fraction", d0.data_fraction), ("--save-steps", d0.save_steps)):
        assert re.search(rf"{flag} \S+ .*?\(default {re.escape(str(value))}\)", text), flag
