"""A non-editable install works: the wheel installed into a folder of its own runs a study cell from a project
home (the current directory), reading the notebooks and configs there and writing data and reports there, and
nothing next to the installed package."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_runs_a_smoke_cell_in_a_project_home(tmp_path):
    source, wheels, target, home = tmp_path / "source", tmp_path / "wheels", tmp_path / "site", tmp_path / "project"
    source.mkdir()  # built from a copy: a build writes build/ and *.egg-info next to the sources
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source)
    shutil.copytree(ROOT / "studylib", source / "studylib", ignore=shutil.ignore_patterns("__pycache__"))
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(wheels), str(source)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = next(wheels.glob("studylib-*.whl"))
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                              str(wheel)], capture_output=True, text=True)
    assert install.returncode == 0, install.stderr[-2000:]
    before = sorted(p.relative_to(target) for p in target.rglob("*") if "__pycache__" not in p.parts)

    home.mkdir()
    shutil.copytree(ROOT / "notebooks", home / "notebooks", ignore=shutil.ignore_patterns("__pycache__"))
    (home / "configs").mkdir()
    shutil.copy(ROOT / "configs" / "smoke.yaml", home / "configs")
    env = {k: v for k, v in os.environ.items() if k not in ("STUDYLIB_HOME", "STUDYLIB_CACHE")}
    env |= {"PYTHONPATH": str(target), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    where = subprocess.run([sys.executable, "-c", "import studylib; print(studylib.__file__)"], cwd=home, env=env,
                           capture_output=True, text=True)
    assert Path(where.stdout.strip()).is_relative_to(target), where.stdout + where.stderr

    run = subprocess.run([sys.executable, "-m", "studylib.cli", "sweep", "configs/smoke.yaml", "--only", "00_teacher",
                          "--no-report"], cwd=home, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in (home / "reports" / "runs").glob("00_teacher-*.json")]
    assert [r["status"] for r in records] == ["ok"]
    assert Path(records[0]["metrics"]["teacher_dir"]).is_relative_to(home / "data" / "checkpoints")
    assert list((home / "data" / "cache").iterdir()), "the data cache is in the project home"
    after = sorted(p.relative_to(target) for p in target.rglob("*") if "__pycache__" not in p.parts)
    assert after == before, "nothing is written next to the installed package"
