import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "studylib.cli", *args], capture_output=True, text=True, cwd=ROOT)


def test_cli_unknown_preset_is_a_clear_error(tmp_path):
    r = run_cli("teacher", "--preset", "llava-huge", "--out", str(tmp_path / "x"))
    assert r.returncode == 2
    assert "argument --preset: invalid choice: 'llava-huge' (choose from 'llava-tiny', 'bunny-tiny', 'llava-small', 'gemma-270m')" in r.stderr
    assert not (tmp_path / "x").exists()


def test_cli_unknown_benchmark_is_a_clear_error(tmp_path):
    r = run_cli("evaluate", str(tmp_path), "--benchmarks", "count,vqa", "--out", str(tmp_path / "o.json"))
    assert r.returncode == 2 and "argument --benchmarks: must be a comma-separated list of scene-qa" in r.stderr
    assert "'vqa' is not one" in r.stderr


def test_cli_evaluate_writes_json_with_reference(tiny_teacher, tmp_path, cache_dir):
    out = tmp_path / "e.json"
    r = run_cli("evaluate", str(tiny_teacher), "--benchmarks", "count,text-only", "--n", "8", "--cache",
                str(cache_dir), "--out", str(out))
    assert r.returncode == 0, r.stderr
    import json

    res = json.loads(out.read_text())
    assert set(res["summary"]) >= {"count", "text-only"}
    assert {row["benchmark"] for row in res["table"]} == {"count", "text-only"}


def test_environment_yml_agrees_with_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    python = next(d for d in deps if isinstance(d, str) and d.startswith("python="))
    major_minor = tuple(int(x) for x in python.split("=")[1].split("."))
    assert major_minor >= tuple(int(x) for x in re.findall(r"\d+", project["requires-python"]))
    pip = next(d["pip"] for d in deps if isinstance(d, dict))
    assert pip == ["-e .[dev]"], "environment.yml installs the project itself: pyproject is the single source"
    assert "torch==2.13.0" in project["dependencies"]
    assert "dev" in project["optional-dependencies"]


def test_readme_quick_start_has_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    quick = readme.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    assert re.findall(r"^make (\w+)\b", quick, flags=re.M) == ["study", "test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_the_package_has_no_import_cycles_and_uses_no_private_names_across_modules():
    """Each studylib module's imports of other studylib modules (top level or inside functions) form no cycle,
    and no module reaches into another's private names (`P._x`, `from .m import _x`)."""
    import ast
    import re

    modules = {p.stem: p.read_text() for p in (ROOT / "studylib").glob("*.py")}
    deps = {}
    for name, source in modules.items():
        found = set()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                found |= {node.module.split(".")[0]} if node.module else {a.name for a in node.names}
                assert not (node.module and any(a.name.startswith("_") for a in node.names)), (name, node.module)
        deps[name] = found & set(modules)
        aliases = re.findall(r"from \. import (\w+) as (\w+)", source)
        for module, alias in aliases:
            assert not re.search(rf"\b{alias}\._[a-z]", source), f"{name} uses a private name of {module}"

    def reach(start):
        seen, todo = set(), [start]
        while todo:
            for d in deps[todo.pop()]:
                if d not in seen:
                    seen.add(d)
                    todo.append(d)
        return seen

    assert [m for m in modules if m in reach(m)] == []
