"""Notebooks are tested artefacts: each one's single source is a jupytext percent script (no .ipynb copy
beside it to fall out of step), with one tagged parameters cell, and each one executes (under nbval) with
smoke parameters."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[!._]*.py"))

SMOKE_BENCHMARKS = ["scene-qa", "pope", "count", "mcq", "ocr", "digits", "text-only"]
SMOKE = {
    "00_teacher": dict(preset="llava-tiny", n_train=200, stage1_steps=2, max_steps=4, batch_size=8, n_bench=10,
                       check_quality=False),
    "01_layerwise": dict(n_train=200, n_bench=10,
                         criteria=["bi", "deepest", "random"], ratios=[0.15, 0.30], calib_samples=8,
                         check_quality=False),
    "02_widthwise": dict(n_train=200, n_bench=10,
                         criteria=["taylor", "l1", "wanda", "random"], ratios=[0.15, 0.30], calib_samples=4,
                         calib_samples_forward=8, check_quality=False),
    "03_recovery": dict(n_train=200, n_bench=10,
                        ratio=0.5, calib_samples=8, train="lora", loss="ce+hidden+kl", data_fraction=32,
                        recovery_batch_size=8, lr=1e-3, check_quality=False),
    "04_data_efficiency": dict(n_train=200, n_bench=10, paradigm="widthwise", criterion="l2", ratio=0.3, train="projector",
                               loss="ce", fractions=[0.05, 0.1], recovery_batch_size=8, lr=1e-3,
                               check_quality=False),
    "05_efficiency": dict(n_train=200, n_bench=10,
                          ratios=[0.15], calib_samples=8, round_to=[1, 8], round_ratio=0.15, batch_sizes=[1, 2],
                          goal_batch_size=2, new_tokens=2, repeats=2, warmup=1, check_quality=False),
    "06_from_scratch": dict(n_train=200, n_bench=10, criterion="l2", ratio=0.3, match_layerwise=False,
                            data_fraction=32, batch_size=8, check_quality=False),
    "99_report": dict(runs_dir="/nonexistent/runs"),  # no records: every table empty, every claim "no evidence"
}


def test_each_notebook_has_one_source():
    """The scripts are the notebooks: no stored .ipynb beside them (it would be a second copy to keep in step),
    and a script read as a notebook and written back as a script is the same text (jupytext round trip)."""
    import jupytext

    assert NOTEBOOKS, "no notebook scripts found"
    assert not list((ROOT / "notebooks").glob("*.ipynb")), "notebooks/ holds .ipynb files: the .py scripts are the source"
    for nb in NOTEBOOKS:
        text = nb.read_text()
        assert jupytext.writes(jupytext.reads(text, fmt="py:percent"), fmt="py:percent") == text, nb.name


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_structure(nb):
    from studylib import notebooks

    data = notebooks.read(nb)
    assert data.metadata["kernelspec"]["name"] == "python3"
    tagged = [c for c in data.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    assert data.cells[0].cell_type == "markdown"
    assert all(not c.get("outputs") for c in data.cells if c.cell_type == "code")
    assert any("assert " in c.source for c in data.cells if c.cell_type == "code")
    assert nb.stem in SMOKE, f"add smoke parameters for {nb.stem} to tests/test_notebooks.py"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_define_no_functions_and_keep_cells_short(nb):
    """The method lives in studylib (each function's docstring states its formula); a notebook calls it."""
    import ast

    from studylib import notebooks

    for tagged, source in notebooks.code_cells(nb):
        defined = [n.name for n in ast.walk(ast.parse(source)) if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
        assert not defined, f"{nb.stem} defines {defined}: move them to studylib"
        lines = [ln for ln in source.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        assert tagged or len(lines) <= 25, f"{nb.stem}: a code cell of {len(lines)} lines:\n{source[:200]}"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes_with_smoke_parameters(nb, tmp_path, cache_dir, tiny_teacher):
    """Notebook 00 trains its tiny teacher; the others run on one (as a sweep passes them 00's teacher)."""
    import papermill as pm

    from studylib import notebooks

    params = dict(SMOKE[nb.stem], checkpoint_root=str(tmp_path / "ckpt"), cache_dir=str(cache_dir),
                  metrics_path=str(tmp_path / "metrics.json"))
    if "teacher_dir" in notebooks.parameters(nb):
        params["teacher_dir"] = str(tiny_teacher)
    prepared = tmp_path / f"{nb.stem}.ipynb"
    pm.execute_notebook(notebooks.read(nb), str(prepared), parameters=params, prepare_only=True, kernel_name="python3")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
                        "--nbval-current-env", str(prepared)], capture_output=True, text=True, cwd=ROOT / "notebooks")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["notebook"] == nb.stem
    if nb.stem in ("01_layerwise", "02_widthwise"):  # per-item results round-trip through the record
        from studylib import intervals as I

        items, scored = metrics["items"], metrics["scored_benchmarks"]
        informed = [c for c in SMOKE[nb.stem]["criteria"] if c != "random"]
        # informed - random is measured, not asserted (the smoke teacher scores nothing: then there is none)
        assert list(metrics["comparison"]["minus_random"]) == (informed if scored else [])
        for d in metrics["comparison"]["minus_random"].values():
            assert d["lo"] <= d["value"] <= d["hi"]
        for point in metrics["per_ratio"]:
            key = f"{metrics['criterion']}@{point['requested_ratio']}"
            assert set(items[key]) == set(items["teacher"]) == set(SMOKE_BENCHMARKS)
            assert all(len(v) == SMOKE[nb.stem]["n_bench"] and set(v) <= {0, 1} for v in items[key].values())
            if not scored:  # the smoke teacher may score 0 everywhere: AVG % and its interval are undefined
                assert all(v != v for v in (point["avg_percent"], point["avg_percent_lo"], point["avg_percent_hi"]))
                continue
            again = I.interval({b: items[key][b] for b in scored}, {b: items["teacher"][b] for b in scored})
            assert (again.lo, again.hi) == (point["avg_percent_lo"], point["avg_percent_hi"])
            assert again.value == pytest.approx(point["avg_percent"])


@pytest.mark.parametrize("name", ["01_layerwise", "03_recovery"])
def test_notebooks_run_on_a_checkpoint_real_benchmarks_and_llava_json(name, tmp_path, cache_dir, tiny_teacher):
    """The real-model path (configs/paper.yaml) on stand-ins: `teacher_dir` names a checkpoint folder instead of
    training one, `real_benchmarks` reads lmms-lab-schema folders, `train_json` is mix-665k-style data."""
    import papermill as pm
    from test_benchmarks import write_fixtures  # the lmms-lab fixture writers
    from test_scale import mix665k_fixture

    fx = write_fixtures(tmp_path / "real")
    (tmp_path / "mix").mkdir()
    data = mix665k_fixture(tmp_path / "mix", n=40)
    common = dict(teacher_dir=str(tiny_teacher), n_bench=0, train_json=str(data), checkpoint_root=str(tmp_path / "ckpt"),
                  real_benchmarks=f"pope={fx['hub']['pope']},mme={fx['disk']['mme']},scienceqa-img={fx['hub']['scienceqa-img']}",
                  cache_dir=str(cache_dir), metrics_path=str(tmp_path / "metrics.json"), check_quality=False)
    extra = (dict(criteria=["bi", "random"], ratios=[0.3], calib_samples=8) if name == "01_layerwise" else
             dict(ratio=0.5, calib_samples=8, train="lora", loss="ce+kl", data_fraction=16, recovery_batch_size=8))
    from studylib import notebooks

    pm.execute_notebook(notebooks.read(ROOT / "notebooks" / f"{name}.py"), str(tmp_path / f"{name}.ipynb"),
                        parameters={**common, **extra}, kernel_name="python3", cwd=str(ROOT / "notebooks"))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["teacher_dir"] == str(tiny_teacher)
    assert set(metrics["teacher_scores"]) == {"pope", "mme", "scienceqa-img"}, "scored on the real benchmarks only"
    assert 0 <= metrics["teacher_scores"]["mme"] <= 400, "MME perception in points (existence + OCR here)"
    if name == "03_recovery":
        assert metrics["recovery"]["examples"] == 16 and metrics["recovery"]["of_examples"] == 40
