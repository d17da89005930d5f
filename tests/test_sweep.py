"""Sweeps: grid expansion and run ids, caching, failures, dependencies, parallel jobs, kill -9 and resume,
aggregation; report tables computed from run records; report pages whose links and images resolve."""

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
import pandas as pd
import pytest
import yaml

from studylib import claims as C
from studylib import report as R
from studylib import sweep as S

ROOT = Path(__file__).resolve().parent.parent

# A notebook that takes a parameter, may sleep or fail, and writes its metrics file (as the study's do).
FAKE = '''
x = 1
fail = False
sleep = 0.0
metrics_path = "metrics.json"
'''
BODY = '''
import json, os, time
time.sleep(sleep)
if fail:
    raise RuntimeError(f"cell failed on purpose (x={x})")
with open(metrics_path, "w") as f:
    json.dump({"notebook": "fake", "x": x, "y": 2 * x, "threads": os.environ.get("OMP_NUM_THREADS")}, f)
'''


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """A notebooks folder holding `fake.py` and `fake2.py` (jupytext scripts), and a runs folder."""
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    for name in ("fake", "fake2"):
        p = nbf.v4.new_code_cell(FAKE.strip())
        p.metadata["tags"] = ["parameters"]
        nb = nbf.v4.new_notebook(cells=[p, nbf.v4.new_code_cell(BODY.strip())],
                                 metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                          "language": "python"}})
        jupytext.write(nb, nbdir / f"{name}.py", fmt="py:percent")
    monkeypatch.setattr(S, "NOTEBOOKS", nbdir)
    return tmp_path


def config(*cells, defaults=None):
    return {"defaults": defaults or {}, "cells": list(cells)}


# ----------------------------------------------------------------------------------------------
# Expansion


def test_grid_expansion_run_ids_and_dependencies(fake):
    cfg = config({"notebook": "fake"},
                 {"notebook": "fake2", "after": ["fake"], "parameters": {"sleep": 0.0},
                  "grid": {"x": [1, 2], "setting": [{"fail": False, "tag": "a"}, {"fail": False, "tag": "b"}]}},
                 defaults={"seed": 0})
    cells = S.expand(cfg)
    assert [c.notebook for c in cells] == ["fake"] + ["fake2"] * 4
    assert cells[1].parameters == {"seed": 0, "sleep": 0.0, "x": 1, "fail": False, "tag": "a"}
    assert all(c.after == [cells[0].run_id] for c in cells[1:])
    assert re.fullmatch(r"fake2-1_False_a-[0-9a-f]{10}", cells[1].run_id), cells[1].run_id
    assert [c.run_id for c in S.expand(cfg)] == [c.run_id for c in cells], "run ids are stable"
    # the hash covers the parameters, the notebook's source and what the cell comes after
    changed = S.expand(config({"notebook": "fake", "parameters": {"x": 5}}, *cfg["cells"][1:], defaults={"seed": 0}))
    assert changed[0].run_id != cells[0].run_id
    assert all(a.run_id != b.run_id for a, b in zip(changed[1:], cells[1:]))
    nb = jupytext.read(S.NOTEBOOKS / "fake2.py")
    nb.cells[1].source += "\n# edited"
    jupytext.write(nb, S.NOTEBOOKS / "fake2.py", fmt="py:percent")
    edited = S.expand(cfg)
    assert edited[0].run_id == cells[0].run_id and edited[1].run_id != cells[1].run_id


@pytest.mark.parametrize("cfg, match", [
    (config({"notebook": "nope"}), "unknown notebook 'nope'; valid notebooks are: fake, fake2"),
    (config({"notebook": "fake", "after": ["fake2"]}), r"comes after \['fake2'\], which no earlier cell runs"),
    (config({"notebook": "fake", "grids": {}}), r"unknown keys \['grids'\]"),
    (config({"notebook": "fake", "grid": {"x": []}}), "grid must map parameter names to non-empty lists"),
    (config({"notebook": "fake"}, {"notebook": "fake"}), "listed twice"),
    ({"cells": []}, "expected 'cells:'"),
])
def test_bad_configs(fake, cfg, match):
    with pytest.raises(ValueError, match=match):
        S.expand(cfg)


def test_the_shipped_configs_expand():
    default = S.load_config(ROOT / "configs" / "default.yaml")
    assert [c.notebook for c in default][0] == "00_teacher"
    recover = [c for c in default if c.notebook == "03_recovery"]
    ratios = {(c.parameters["paradigm"], c.parameters["ratio"]) for c in recover if c.parameters["loss"] == "ce+hidden"}
    assert ratios == {(p, r) for p in ("layerwise", "widthwise") for r in (0.15, 0.30, 0.45, 0.60)}
    for name in ("smoke", "full"):
        assert S.load_config(ROOT / "configs" / f"{name}.yaml")
    with pytest.raises(FileNotFoundError, match="configs: .*default.yaml"):
        S.load_config(ROOT / "configs" / "missing.yaml")


# ----------------------------------------------------------------------------------------------
# Running


def test_sweep_runs_caches_and_reruns_nothing(fake):
    runs = fake / "runs"
    cells = S.expand(config({"notebook": "fake", "grid": {"x": [1, 2, 3]}}))
    first = S.sweep(cells, runs=runs, log=lambda *_: None)
    assert sorted(first["done"]) == sorted(c.run_id for c in cells) and not first["failed"]
    for c in cells:
        rec = json.loads((runs / f"{c.run_id}.json").read_text())
        assert rec["status"] == "ok" and rec["metrics"]["y"] == 2 * c.parameters["x"]
        assert rec["versions"]["torch"] and rec["parameters"] == c.parameters and rec["seconds"] > 0
        assert (runs / f"{c.run_id}.ipynb").exists()
    mtimes = {p: p.stat().st_mtime for p in runs.iterdir()}
    t0 = time.perf_counter()
    again = S.sweep(cells, runs=runs, log=lambda *_: None)
    assert time.perf_counter() - t0 < 5  # nothing is executed: only the result files are looked at
    assert sorted(again["skipped"]) == sorted(first["done"]) and not again["done"]
    assert {p: p.stat().st_mtime for p in runs.iterdir()} == mtimes
    assert not list(runs.glob(".*")), "no partial files are left behind"
    table = S.aggregate(runs)
    assert sorted(table["metric.y"]) == [2, 4, 6] and (runs / "results.csv").exists()
    forced = S.sweep(cells[:1], runs=runs, force=True, log=lambda *_: None)
    assert forced["done"] == [cells[0].run_id]


def test_submitit_executor_runs_cells_as_jobs_in_order(fake):
    """`--executor slurm` goes through submitit; its local executor runs the same jobs as local processes."""
    pytest.importorskip("submitit")
    runs = fake / "runs"
    cells = S.expand(config({"notebook": "fake", "parameters": {"x": 3}},
                            {"notebook": "fake2", "after": ["fake"], "parameters": {"x": 2}},
                            {"notebook": "fake2", "parameters": {"x": 9, "fail": True}}))
    executor = S.make_executor("submitit-local", runs, jobs=2, timeout_min=5)
    result = S.sweep(cells, jobs=2, runs=runs, log=lambda *_: None, executor=executor, poll_seconds=0.2)
    assert sorted(result["done"]) == sorted(c.run_id for c in cells[:2]) and result["failed"] == [cells[2].run_id]
    recs = {r["run_id"]: r for r in S.collect(runs)}
    assert [recs[c.run_id]["metrics"]["y"] for c in cells[:2]] == [6, 4]
    assert recs[cells[1].run_id]["finished"] >= recs[cells[0].run_id]["finished"], "fake2 ran after fake"
    assert "failed on purpose" in json.loads((runs / f"{cells[2].run_id}.failed.json").read_text())["error"]
    assert S.sweep(cells[:2], runs=runs, log=lambda *_: None, executor=executor)["skipped"] == result["done"]


def test_cores_are_split_between_the_cells_that_run_together(fake, monkeypatch):
    """A cell that runs alone (the teacher) gets every core; cells that run side by side share them."""
    monkeypatch.setattr(S.os, "cpu_count", lambda: 4)
    runs = fake / "runs"
    cells = S.expand(config({"notebook": "fake"}, {"notebook": "fake2", "after": ["fake"], "grid": {"x": [1, 2, 3]}}))
    result = S.sweep(cells, jobs=2, runs=runs, log=lambda *_: None)
    assert len(result["done"]) == 4
    threads = {r["run_id"]: r["metrics"]["threads"] for r in S.collect(runs)}
    assert threads[cells[0].run_id] == "4" and {threads[c.run_id] for c in cells[1:]} == {"2"}


def test_a_relative_runs_folder_works(fake, monkeypatch):
    """`studylib sweep --out reports` (relative): the notebook runs in its own folder, so the paths it gets
    must be absolute, or its metrics land elsewhere and the cell is wrongly recorded as failed."""
    monkeypatch.chdir(fake)
    cells = S.expand(config({"notebook": "fake", "parameters": {"x": 4}}))
    result = S.sweep(cells, runs=Path("relative-runs"), log=lambda *_: None)
    assert result["done"] == [cells[0].run_id], result
    assert json.loads((fake / "relative-runs" / f"{cells[0].run_id}.json").read_text())["metrics"]["y"] == 8


def test_executor_choice_is_checked(tmp_path):
    with pytest.raises(ValueError, match="allowed: local, slurm, submitit-local"):
        S.make_executor("pbs", tmp_path)
    with pytest.raises(ValueError, match="need --executor slurm"):
        S.make_executor("local", tmp_path, slurm_partition="gpu")


def test_a_failing_cell_is_recorded_and_blocks_only_what_depends_on_it(fake):
    runs = fake / "runs"
    cells = S.expand(config({"notebook": "fake", "grid": {"x": [1, 2], "fail": [False, True]}},
                            {"notebook": "fake2", "after": ["fake"]}))
    result = S.sweep(cells, runs=runs, jobs=2, log=lambda *_: None)
    failed = [c.run_id for c in cells if c.parameters.get("fail")]
    assert sorted(result["failed"]) == sorted(failed)
    assert len(result["done"]) == 2 and result["blocked"] == [cells[-1].run_id]
    rec = json.loads((runs / f"{failed[0]}.failed.json").read_text())
    assert "cell failed on purpose" in rec["error"] and Path(rec["partial_notebook"]).name.startswith(".")
    assert not (runs / f"{failed[0]}.json").exists(), "a failed cell has no result"
    assert len(S.collect(runs)) == 2


def test_kill_9_then_rerun_gives_the_uninterrupted_results(fake):
    cfg = config({"notebook": "fake", "parameters": {"sleep": 1.5}, "grid": {"x": [1, 2, 3, 4]}})
    script = fake / "run_sweep.py"
    script.write_text(textwrap.dedent(f"""
        import sys, json
        from pathlib import Path
        from studylib import sweep as S
        S.NOTEBOOKS = Path({str(S.NOTEBOOKS)!r})
        cfg = json.loads(Path(sys.argv[1]).read_text())
        S.sweep(S.expand(cfg), runs=Path(sys.argv[2]))
    """))
    (fake / "cfg.json").write_text(json.dumps(cfg))
    runs = fake / "runs"
    proc = subprocess.Popen([sys.executable, str(script), str(fake / "cfg.json"), str(runs)], cwd=ROOT,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(S.collect(runs) if runs.exists() else []) < 1:
        time.sleep(0.2)
    time.sleep(1.0)  # now in the middle of a later cell
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = S.collect(runs)
    assert 1 <= len(finished) < 4, "killed mid-sweep"
    assert all(r["status"] == "ok" for r in finished), "a partial output is never read as a result"
    S.sweep(S.expand(cfg), runs=runs, log=lambda *_: None)
    resumed = {r["run_id"]: r["metrics"] for r in S.collect(runs)}
    straight_runs = fake / "straight"
    S.sweep(S.expand(cfg), runs=straight_runs, log=lambda *_: None)
    assert resumed == {r["run_id"]: r["metrics"] for r in S.collect(straight_runs)}


def test_only_selects_cells_and_their_dependencies(fake):
    cells = S.expand(config({"notebook": "fake"}, {"notebook": "fake2", "after": ["fake"], "grid": {"x": [1, 2]}}))
    chosen = S.select(cells, cells[2].run_id)
    assert [c.run_id for c in chosen] == [cells[0].run_id, cells[2].run_id]
    assert len(S.select(cells, "fake2")) == 3
    with pytest.raises(ValueError, match="matches no cell"):
        S.select(cells, "nothing*")
    with pytest.raises(ValueError, match="--jobs 0 must be >= 1"):
        S.sweep(cells, jobs=0)


# ----------------------------------------------------------------------------------------------
# Report tables from run records


def records():
    """Run records shaped as the study's notebooks write them (numbers chosen for the test)."""
    per_ratio = lambda avgs: [{"requested_ratio": r, "lm_ratio": r - 0.01, "avg_percent": a, "relative": {"ocr": a}}
                              for r, a in zip((0.15, 0.30, 0.45, 0.60), avgs)]
    recs = [{"run_id": "l", "notebook": "01_layerwise", "metrics": {"criterion": "bi", "per_ratio": per_ratio([80, 60, 40, 20])}},
            {"run_id": "w", "notebook": "02_widthwise", "metrics": {"criterion": "taylor", "per_ratio": per_ratio([90, 70, 50, 30])}}]
    recovered = {("layerwise", 0.15): {"projector:ce": 97.5, "lora:ce+hidden": 99}, ("layerwise", 0.30): {"lora:ce+hidden": 96, "lora:ce": 97},
                 ("widthwise", 0.15): {"projector:ce": 94, "lora:ce+hidden": 98}, ("widthwise", 0.30): {"lora:ce+hidden": 95},
                 ("layerwise", 0.60): {"lora:ce+hidden": 70}, ("widthwise", 0.60): {"lora:ce+hidden": 85}}
    for (p, r), recipes in recovered.items():
        for recipe, a in recipes.items():
            train, loss = recipe.split(":")
            recs.append({"run_id": f"{p}{r}{recipe}", "notebook": "03_recovery", "metrics": {
                "paradigm": p, "criterion": "x", "ratio": r, "lm_ratio": r, "recipe": {"train": train, "loss": loss},
                "data_fraction": 0.05, "avg_percent_recovered": a, "relative_recovered": {"ocr": a}}})
    return recs


def test_claims_table_applies_its_stated_tests():
    table = C.retention(records())
    assert len(table) == 8 + 9  # 4 ratios x 2 paradigms without recovery, 9 recoveries
    claims = C.claims_table(table)
    held = dict(zip(claims["claim"].str[0], claims["held"]))
    claims = claims.set_index(claims["claim"].str[0])
    assert held["1"] == "yes"  # width 90 > layer 80, 70 > 60
    assert held["2"] == "no"  # widthwise 15 %: projector 94 vs best 98
    assert held["3"] == "no"  # layerwise 30 %: lora:ce 97 beats ce+hidden 96
    assert held["4"] == "no"  # best at <= 30 %: 99, 97, 98 and 95 (widthwise 30 %), which is not > 95
    assert held["5"] == "yes"  # 15 %: layer 99 >= width 98, 30 %: 97 >= 95, 60 %: width 85 > layer 70
    assert held["6"] == "yes"  # best at 60 %: 85 < 90
    assert "layer 80.0" in claims.loc["1", "this run"]
    empty = C.claims_table(C.retention([]))
    assert set(empty["held"]) == {"no evidence"}


def test_decision_guide_picks_the_best_measured_choice():
    guide = C.decision_guide(C.retention(records()))
    g = guide.set_index(["compression", "budget"])
    assert g.loc[("<= 15 %", "no training"), "paradigm"] == "widthwise"  # 90 > 80, no recovery
    assert g.loc[("<= 15 %", "projector only"), "recipe"] == "projector:ce"
    assert g.loc[("<= 15 %", "LoRA"), "AVG %"] == 99
    assert g.loc[(">= 46 %", "any"), "advice"] == "acceptable loss?"  # 85
    assert g.loc[(">= 46 %", "no training"), "advice"] == "not worth it: a smaller model"


def test_report_pages_links_and_images_resolve(fake, tmp_path, monkeypatch):
    runs = fake / "runs"
    S.sweep(S.expand(config({"notebook": "fake", "grid": {"x": [1, 2]}})), runs=runs, log=lambda *_: None)
    reports = tmp_path / "reports"
    (reports / "gemma").mkdir(parents=True)  # another study rendered into a sub-folder is linked
    (reports / "gemma" / "index.html").write_text("<html></html>")
    (reports / "gemma" / "summary.html").write_text("<html></html>")
    index = R.build_report(runs, reports)
    pages = [index, reports / "summary.html", *sorted((reports / "pages").glob("*.html"))]
    assert len(pages) == 4 and 'href="gemma/index.html"' in index.read_text()
    for page in pages:
        text = page.read_text()
        for ref in re.findall(r'(?:href|src)="([^"#]+)"', text):
            if ref.startswith(("data:", "http://", "https://", "mailto:")):
                continue
            assert (page.parent / ref).exists(), f"{page.name}: {ref} does not resolve"
    assert "summary.html" in index.read_text() and "pages/" in index.read_text()
    summary = json.loads((reports / "summary.json").read_text())
    assert summary["runs"] == 2 and len(summary["claims"]) == 6


def test_smoke_config_end_to_end(tmp_path, cache_dir, monkeypatch):
    """configs/smoke.yaml: every study notebook on the tiny preset through the sweep, then the report."""
    cfg = yaml.safe_load((ROOT / "configs" / "smoke.yaml").read_text())
    cfg["defaults"] |= {"checkpoint_root": str(tmp_path / "ckpt"), "cache_dir": str(cache_dir)}
    cells = S.expand(cfg, "smoke.yaml")
    runs = tmp_path / "runs"
    result = S.sweep(cells, runs=runs, jobs=1, log=print)
    failed = {r: json.loads((runs / f"{r}.failed.json").read_text())["log_tail"][-1500:] for r in result["failed"]}
    assert not failed and not result["blocked"], failed
    assert {c.notebook for c in cells} == {r["notebook"] for r in S.collect(runs)}
    index = R.build_report(runs, tmp_path / "reports")
    summary = json.loads((tmp_path / "reports" / "summary.json").read_text())
    assert summary["runs"] == len(cells)
    # the tiny teacher scores 0 nearly everywhere, so AVG % may be undefined: check the rows, not their values
    assert {"none", "projector:ce", "lora:ce+hidden"} <= set(C.retention(S.collect(runs))["recipe"])
    assert summary["retention"] == [] or {"recipe", "avg_percent"} <= set(summary["retention"][0])
    assert index.exists() and len(list((tmp_path / "reports" / "pages").glob("*.html"))) == len(cells)
    # the report pages of a real sweep: links and images resolve, math by the local MathJax, nothing a reader
    # must not see (warnings, tracebacks, absolute paths), every run named by its parameters on the index
    import html

    from test_report import check_clean, check_links, check_math

    reports = tmp_path / "reports"
    check_links(reports)
    check_math(reports)
    check_clean(reports, {str(tmp_path), str(ROOT), str(Path.home())})
    text = index.read_text()
    for rec in S.collect(runs):
        assert html.escape(R.scrub_paths(R.run_title(rec), [(str(reports.resolve()), "reports")])) in text
    assert "Recovery: widthwise L2 30 %, LoRA, CE + hidden KD, 16 examples (8 % of the data)" in text


def test_cli_sweep_bad_input(tmp_path, capsys):
    from studylib import cli

    assert cli.main(["sweep", str(tmp_path / "none.yaml")]) == 2
    assert "does not exist; configs: default.yaml" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # argparse: a bad number
        cli.main(["sweep", str(ROOT / "configs" / "smoke.yaml"), "--jobs", "0"])
    assert e.value.code == 2 and "argument --jobs: must be an integer >= 1; got 0" in capsys.readouterr().err
    assert cli.main(["sweep", str(ROOT / "configs" / "smoke.yaml"), "--only", "zzz*"]) == 2
    assert "matches no cell" in capsys.readouterr().err


def test_a_cell_after_the_teacher_cell_gets_its_teacher(tmp_path, monkeypatch):
    """`teacher_for` passes the 00_teacher record's teacher_dir to a notebook with a teacher_dir parameter,
    unless the cell sets one; a cell after two teacher cells must say which."""
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    for name, params in (("00_teacher", "seed = 0"), ("01_user", 'teacher_dir = ""\nseed = 0')):
        p = nbf.v4.new_code_cell(params)
        p.metadata["tags"] = ["parameters"]
        jupytext.write(nbf.v4.new_notebook(cells=[p]), nbdir / f"{name}.py", fmt="py:percent")
    monkeypatch.setattr(S, "NOTEBOOKS", nbdir)
    runs = tmp_path / "runs"
    runs.mkdir()
    teacher, user, own = S.expand(config({"notebook": "00_teacher"}, {"notebook": "01_user", "after": ["00_teacher"]},
                                         {"notebook": "01_user", "after": ["00_teacher"], "parameters": {"teacher_dir": "/x"}}))
    S.result_path(teacher.run_id, runs).write_text(json.dumps({"notebook": "00_teacher", "metrics": {"teacher_dir": "/t"}}))
    assert S.teacher_for(user, runs) == {"teacher_dir": "/t"}
    assert S.teacher_for(own, runs) == {}, "a cell's own teacher_dir wins"
    with pytest.raises(ValueError, match="comes after 2 teacher cells; set its teacher_dir"):
        S.expand(config({"notebook": "00_teacher", "grid": {"seed": [0, 1]}}, {"notebook": "01_user", "after": ["00_teacher"]}))
