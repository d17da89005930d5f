"""Sweeps: a grid of parameterised notebooks executed by papermill, cached, resumable and ordered.

A config file (configs/*.yaml) lists cells:

    defaults: {preset: llava-small, seed: 0}        # given to every cell
    cells:
      - notebook: 00_teacher
      - notebook: 03_recovery
        after: [00_teacher]                         # runs once every 00_teacher cell has finished
        parameters: {data_fraction: 0.05}
        grid:                                       # cartesian product; a dict element sets several
          paradigm: [layerwise, widthwise]          # parameters (its optional `label` names it in run ids)
          recipe: [{train: projector, loss: ce}, {train: lora, loss: ce+hidden}]

Each expanded cell gets a run id `<notebook>-<readable parameters>-<hash>`; the hash covers the notebook's
code (`code_fingerprint`: its code cells, and the source of every studylib module they import, directly or
through other studylib modules), its parameters and the run ids of the cells it comes after (so a changed
teacher reruns what depends on it). Markdown cells and outputs are not covered: a prose edit reruns nothing,
while a change to the library reruns the cells whose notebooks import what changed, without `--force`.

`replicates` (optional, written like a grid) runs the whole list of cells once per element, with the element's
parameters added to `defaults`, and a cell's `after` names the cells of its own replica; so

    replicates:
      teacher: [{label: t0, seed: 0, calib_seed: 0, recovery_seed: 0}, {label: t1, seed: 1, ...}]

reruns the study on three teachers of different seeds, each with its own pruning and recovery seeds
(configs/seeds.yaml). A seed that varies within one teacher is an ordinary grid axis (configs/default.yaml's
`recovery_seed`); the report pools the runs that differ only in their seeds (`claims.pool`).

A cell that comes after a 00_teacher cell runs on the teacher that cell trained: its record's `teacher_dir`
is passed as the cell's `teacher_dir` parameter (`teacher_for`), unless the cell sets one itself. So the
pruning and recovery notebooks need not repeat the teacher's training settings, and cannot disagree with them.

A cell's result is `reports/runs/<run-id>.json`, written last and atomically (after the executed notebook is
renamed into place); a cell whose result exists is skipped. Partial outputs carry a
`.partial` name and are never read as results, so an interrupted sweep (Ctrl-C, kill -9) loses no finished
cell and a rerun finishes only what is missing. A failing cell is recorded in `<run-id>.failed.json` and
does not stop the others (cells that come after it are skipped); the sweep then exits non-zero.

One sweep at a time writes into a runs folder: `sweep` holds a lock on it (`runs/.sweep.lock`, see
`studylib.files`) and a second sweep into the same folder is refused at once, before it touches anything.
Partial files carry the writing process's host and pid, so two writers never share one. A runs folder that
cannot be written (read-only, full) stops the sweep with an error naming the folder and the reason; finished
records are never deleted or overwritten by a failed write.

`load_config` checks a config file against the notebooks: top-level keys (`defaults`, `cells`), notebook
names (a plain name of a file in notebooks/), and every parameter name against the notebook's `parameters`
cell (see `check_parameters`), so that a typo is an error instead of a run with the notebook's defaults.

Cells run in subprocesses (`python -m papermill`), `--jobs` at a time, with the CPU threads split
between them (OMP_NUM_THREADS). This is written here because papermill runs one notebook and no library
of the stack schedules a small dependency graph of notebooks with result caching.

On a cluster, `--executor slurm` hands each cell to SLURM through submitit (one job per cell, submitted
when the cells it comes after have finished; the driver stays on the login node and only waits). Runs and
records are the same files, so a sweep can be resumed locally or on the cluster alike.
"""

from __future__ import annotations

import ast
import errno
import fnmatch
import functools
import glob
import hashlib
import itertools
import json
import os
import platform
import re
import socket
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from . import files, notebooks
from .validate import EXECUTORS, did_you_mean

PACKAGE = Path(__file__).resolve().parent  # studylib's source, what `code_fingerprint` reads (tests point it elsewhere)
NOTEBOOKS = files.home() / "notebooks"  # the project home's (files.home: $STUDYLIB_HOME or the current directory)
RUNS = files.home() / "reports" / "runs"
PACKAGES = ("torch", "transformers", "datasets", "accelerate", "peft", "papermill")


@dataclass
class Cell:
    notebook: str
    parameters: dict
    after: list[str] = field(default_factory=list)  # run ids this cell waits for
    run_id: str = ""
    path: str = ""  # the notebook file (absolute), so that a job on another process or node finds it


# ----------------------------------------------------------------------------------------------
# Expanding a config


def _readable(parts: list) -> str:
    text = "-".join(f"{v:g}" if isinstance(v, float) else str(v) for v in parts if v not in (None, ""))
    return "".join(c if c.isalnum() or c in ".+" else "_" for c in text.replace("-", "_")).strip("_")[:60]


def _hash(obj) -> str:
    return files.key(obj)


def _notebook_path(name) -> Path:
    """notebooks/<name>.py, the notebook's jupytext script (`notebooks.path`)."""
    return notebooks.path(name, NOTEBOOKS)


def _code_cells(name: str) -> list[tuple[bool, str]]:
    return notebooks.code_cells(_notebook_path(name))


def _module_file(module: str) -> Path | None:
    """PACKAGE/<a>/<b>.py (or its package's __init__.py) for the studylib module `a.b`; "" is the package."""
    base = PACKAGE.joinpath(*module.split(".")) if module else PACKAGE
    for path in (base.with_suffix(".py") if module else None, base / "__init__.py"):
        if path is not None and path.is_file():
            return path
    return None


@functools.lru_cache(maxsize=None)
def _import_statements(source: str) -> tuple[tuple[int, str | None, tuple[str, ...]], ...] | None:
    """Every import statement of `source`, anywhere (inside functions too), as (level, module, names):
    `import a.b` is (-1, None, ("a.b",)), `from ..x import y` is (2, "x", ("y",)). None when the source
    does not parse, even with IPython magics (`%...`, `!...` lines) left out. Cached on the source text."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        lines = ["" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines()]
        try:
            tree = ast.parse("\n".join(lines))
        except SyntaxError:
            return None
    return tuple((-1, None, tuple(a.name for a in node.names)) if isinstance(node, ast.Import) else
                 (node.level, node.module, tuple(a.name for a in node.names))
                 for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom)))


def _studylib_imports(source: str, module: str | None) -> tuple[str, ...] | None:
    """The studylib modules that `source` imports, as names relative to the package ("pruning", "" for the
    package itself): `import studylib.x`, `from studylib import x, y` (those of x, y that are modules;
    the package for the others), `from studylib.x import y`, and, in a studylib module (`module`, None
    for a notebook's code), the relative `from . import x` and `from .x import y`. None when the source
    does not parse."""
    statements = _import_statements(source)
    if statements is None:
        return None
    # the package a relative import starts from: the module's own for an __init__.py, else its parent's
    is_init = module is not None and (_module_file(module) or PACKAGE).name == "__init__.py"
    package = (module if is_init else module.rpartition(".")[0]) if module is not None else ""

    def inside(dotted: str) -> str | None:  # "studylib.x.y" -> "x.y", "studylib" -> "", else None
        if dotted == "studylib":
            return ""
        return dotted[len("studylib."):] if dotted.startswith("studylib.") else None

    found = set()
    for level, source_module, names in statements:
        if level < 0:  # import a, b.c
            found.update(n for n in map(inside, names) if n is not None)
            continue
        if level:  # relative: only meaningful inside the package
            if module is None:
                continue
            parts = package.split(".") if package else []
            parts = parts[:len(parts) - (level - 1)] if level > 1 else parts
            base = ".".join(parts + ([source_module] if source_module else []))
        else:
            base = inside(source_module or "")
            if base is None:
                continue
        found.add(base)
        for name in names:  # `from studylib import pruning`: a module; else a name defined in `base`
            sub = f"{base}.{name}" if base else name
            if name != "*" and _module_file(sub) is not None:
                found.add(sub)
    return tuple(sorted(found))


def _all_modules() -> list[str]:
    return sorted(".".join(p.relative_to(PACKAGE).with_suffix("").parts).removesuffix("__init__").rstrip(".")
                  for p in PACKAGE.rglob("*.py"))


def notebook_modules(name: str) -> list[str]:
    """The studylib modules `code_fingerprint(name)` covers: those the notebook's code cells import, then
    those these import (any import, lazy ones inside functions included), transitively; "" is the
    package's __init__.py, which every import of studylib runs. A parent package of a module is included
    too. A code cell that does not parse (even with IPython magics left out) covers the whole package."""
    todo: list[str] = []
    for _, source in _code_cells(name):
        imports = _studylib_imports(source, None)
        if imports is None:
            return _all_modules()
        todo += imports
    seen: set[str] = set()
    while todo:
        module = todo.pop()
        path = _module_file(module)
        if module in seen or path is None:
            continue
        seen.add(module)
        parts = module.split(".") if module else []
        todo += [".".join(parts[:i]) for i in range(len(parts))]  # importing a.b runs "" and a first
        imports = _studylib_imports(path.read_text(), module)
        todo += _all_modules() if imports is None else imports
    return sorted(seen)


def code_fingerprint(name: str) -> str:
    """A hash of what notebooks/<name>.py runs: the source of its code cells, in order (and which one is
    tagged `parameters`), and the bytes of every studylib module it imports (`notebook_modules`, read from
    `PACKAGE`). Markdown cells, outputs and other metadata are left out, so a prose edit keeps the hash, and
    a change to a studylib module the notebook does not import (directly or transitively) does too.
    Imports by name at run time (`importlib.import_module`) are not seen. The files are read at each call
    (expand calls this once per config cell); parsing is cached per process on the source text."""
    modules = {str(_module_file(m).relative_to(PACKAGE)): hashlib.sha256(_module_file(m).read_bytes()).hexdigest()
               for m in notebook_modules(name)}
    return _hash({"code_cells": _code_cells(name), "studylib": modules})


def notebook_parameters(name: str) -> list[str]:
    """The names the `parameters`-tagged cell of notebooks/<name>.py assigns (what papermill overrides)."""
    return notebooks.parameters(_notebook_path(name))


def _grid(grid: dict) -> list[tuple[dict, list]]:
    """Cartesian product of the grid, as (parameters, readable parts). A dict element sets several
    parameters at once; its `label` (if any) names it in run ids instead of its values."""
    if not isinstance(grid, dict) or not all(isinstance(v, list) and v for v in grid.values()):
        raise ValueError(f"grid must map parameter names to non-empty lists, got {grid!r}")
    combos = []
    for values in itertools.product(*grid.values()):
        params, parts = {}, []
        for key, value in zip(grid, values):
            if isinstance(value, dict):
                value = dict(value)
                label = value.pop("label", None)
                params.update(value)
                parts += [label] if label else list(value.values())
            else:
                params[key] = value
                parts.append(value)
        combos.append((params, parts))
    return combos


TOP_KEYS = ("defaults", "cells", "replicates")
CELL_KEYS = ("notebook", "parameters", "grid", "after")
INJECTED = ("metrics_path",)  # set by the sweep for every cell (`run_cell`): not for a config to set


def expand(config: dict, source: str = "config", check_names: bool = False) -> list[Cell]:
    """The cells of a config, with their run ids and dependencies, in an order that respects `after`.

    Checks the structure (top-level keys, cell keys, notebook names, grids); `check_names=True` (what
    `load_config` uses) also checks every parameter name against the notebooks (`check_parameters`)."""
    if isinstance(config, dict):
        unknown = [k for k in config if k not in TOP_KEYS]
        if unknown:
            raise ValueError(f"{source}: unknown top-level key {unknown[0]!r}{did_you_mean(unknown[0], TOP_KEYS)}; "
                             f"allowed: {', '.join(TOP_KEYS)}")
    if not isinstance(config, dict) or not isinstance(config.get("cells"), list) or not config["cells"]:
        raise ValueError(f"{source}: expected 'cells:' with a list of {{notebook, parameters, grid, after}} entries")
    defaults = config.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ValueError(f"{source}: 'defaults' must map parameter names to values, got {defaults!r}")
    if config.get("replicates") is not None and not isinstance(config["replicates"], dict):
        raise ValueError(f"{source}: 'replicates' must map a name to a list of parameter sets, like a grid, "
                         f"got {config['replicates']!r}")
    cells: list[Cell] = []
    for replica, replica_parts in _grid(config["replicates"]) if config.get("replicates") else [({}, [])]:
        cells += _expand_cells(config, {**defaults, **replica}, replica_parts, source)
    ids = [c.run_id for c in cells]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"{source}: cells {dup} are listed twice with the same parameters")
    if check_names:
        check_parameters(config, source)
    return cells


def _expand_cells(config: dict, defaults: dict, replica_parts: list, source: str) -> list[Cell]:
    """The cells of one replica of a config (`after` names cells of the same replica)."""
    cells: list[Cell] = []
    by_notebook: dict[str, list[str]] = {}
    for i, entry in enumerate(config["cells"]):
        if not isinstance(entry, dict) or "notebook" not in entry:
            raise ValueError(f"{source}: cell {i} has no 'notebook'")
        unknown = set(entry) - set(CELL_KEYS)
        if unknown:
            first = sorted(unknown)[0]
            raise ValueError(f"{source}: cell {i} has unknown keys {sorted(unknown)}{did_you_mean(first, CELL_KEYS)}; "
                             f"allowed: {', '.join(CELL_KEYS)}")
        name = entry["notebook"]
        try:
            nb_hash = code_fingerprint(name)
        except ValueError as e:
            raise ValueError(f"{source}: cell {i}: {e}") from None
        if not isinstance(entry.get("parameters") or {}, dict):
            raise ValueError(f"{source}: cell {i} ({name}): 'parameters' must map parameter names to values, "
                             f"got {entry['parameters']!r}")
        after_names = entry.get("after") or []
        missing = [a for a in after_names if a not in by_notebook]
        if missing:
            raise ValueError(f"{source}: cell {i} ({name}) comes after {missing}, which no earlier cell runs")
        after = [rid for a in after_names for rid in by_notebook[a]]
        teachers = [rid for rid in after if rid.startswith("00_teacher-")]
        if len(teachers) > 1 and "teacher_dir" not in {**defaults, **(entry.get("parameters") or {})}:
            raise ValueError(f"{source}: cell {i} ({name}) comes after {len(teachers)} teacher cells; set its "
                             f"teacher_dir, or let it come after one (see teacher_for)")
        for params, parts in _grid(entry["grid"]) if entry.get("grid") else [({}, [])]:
            full = {**defaults, **(entry.get("parameters") or {}), **params}
            digest = _hash({"notebook": nb_hash, "parameters": full, "after": after})
            readable = _readable([*replica_parts, *parts])
            run_id = f"{name}-{readable}-{digest}" if readable else f"{name}-{digest}"
            cells.append(Cell(name, full, after, run_id, str(_notebook_path(name).resolve())))
            by_notebook.setdefault(name, []).append(run_id)
    return cells


def check_parameters(config: dict, source: str = "config") -> None:
    """Every parameter a config sets must be one its notebook has (a name its `parameters` cell assigns);
    else ValueError naming the file, the cell and notebook, the name, a close match and the valid names.

    - a cell's `parameters`, and its `grid`: a grid key whose elements are plain values is a parameter; in a
      dict element every key but `label` is one (the grid key of dict elements only names them);
    - `defaults` go to every cell, and papermill passes a name the notebook lacks on with a mere warning; a
      default must be a parameter of at least one notebook of the config (so `lr` for the recovery notebooks,
      next to pruning-only ones, is accepted, and a name no notebook has is a typo);
    - `metrics_path` is set by the sweep itself and refused here."""
    defaults = config.get("defaults") or {}
    cells = config["cells"]
    known = {e["notebook"]: notebook_parameters(e["notebook"]) for e in cells}

    def bad(name, valid, where):
        if name in INJECTED:
            return ValueError(f"{source}: {where}: {name!r} is set by the sweep for every cell; remove it")
        return ValueError(f"{source}: {where}: unknown parameter {name!r}{did_you_mean(name, valid)}; "
                          f"valid names: {', '.join(v for v in valid if v not in INJECTED)}")

    everywhere = sorted({p for names in known.values() for p in names})
    for key in defaults:
        if key in INJECTED or key not in everywhere:
            raise bad(key, everywhere, f"defaults (given to {', '.join(known)})")
    for name, values in (config.get("replicates") or {}).items():  # added to the defaults of each replica
        for value in values:
            for key in [k for k in value if k != "label"] if isinstance(value, dict) else [name]:
                if key in INJECTED or key not in everywhere:
                    raise bad(key, everywhere, f"replicates {name!r}")
    for i, entry in enumerate(cells):
        name = entry["notebook"]
        valid = known[name]
        where = f"cell {i} ({name})"
        for key in entry.get("parameters") or {}:
            if key in INJECTED or key not in valid:
                raise bad(key, valid, f"{where} parameters")
        for key, values in (entry.get("grid") or {}).items():
            for value in values:
                keys = [k for k in value if k != "label"] if isinstance(value, dict) else [key]
                for k in keys:
                    if k in INJECTED or k not in valid:
                        raise bad(k, valid, f"{where} grid {key!r}")


def load_config(path: str | Path) -> list[Cell]:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config {path} does not exist; configs: "
                                f"{', '.join(sorted(p.name for p in (files.home() / 'configs').glob('*.yaml')))}")
    try:
        config = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        raise ValueError(f"config {path} is not valid YAML{at}: {getattr(e, 'problem', None) or e}") from None
    return expand(config, str(path), check_names=True)


# ----------------------------------------------------------------------------------------------
# Running


def result_path(run_id: str, runs: Path = RUNS) -> Path:
    return runs / f"{run_id}.json"


def is_done(run_id: str, runs: Path = RUNS) -> bool:
    return result_path(run_id, runs).exists()


class RunsFolderError(ValueError):
    """The runs folder cannot be written (read-only, full, no permission): the sweep stops, records stay."""


def _unwritable(runs: Path, err: OSError, doing: str) -> RunsFolderError:
    reason = errno.errorcode.get(err.errno, str(err.errno)) if err.errno else type(err).__name__
    return RunsFolderError(f"cannot write to the runs folder {runs} ({doing}): {err.strerror or err} ({reason}); "
                           "finished records there are kept: free space, fix its permissions, or use another --out")


def _write(runs: Path, path: Path, text: str) -> None:
    """`files.atomic_write` into the runs folder; an OSError becomes a RunsFolderError naming folder and reason."""
    try:
        files.atomic_write(path, text)
    except OSError as e:
        raise _unwritable(runs, e, f"writing {path.name}") from e


def _writer() -> str:
    """This process as part of a file name: host and pid (two writers never share a partial file)."""
    host = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:20] or "host"
    return f"{host}-{os.getpid()}"


def _partials(runs: Path, run_id: str) -> list[Path]:
    return [p for p in runs.glob(f".{glob.escape(run_id)}.*")
            if p.name.endswith((".partial.ipynb", ".partial.json", ".params.yaml", ".input.ipynb"))]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_partials(runs: Path, run_id: str) -> None:
    """Partial files of `run_id` left by a dead process of this host (e.g. killed): removed. Those of a live
    process, or of another host, are left alone."""
    host = _writer().rsplit("-", 1)[0]
    for p in _partials(runs, run_id):
        m = re.fullmatch(rf"\.{re.escape(run_id)}\.([A-Za-z0-9]+)-(\d+)\..*", p.name)
        if m and m.group(1) == host and int(m.group(2)) != os.getpid() and not _alive(int(m.group(2))):
            p.unlink(missing_ok=True)


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for p in PACKAGES:
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            out[p] = None
    return out


def _git_commit() -> str | None:
    try:
        r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PACKAGE.parent, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=PACKAGE.parent,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (r.stdout.strip() + ("+dirty" if dirty else "")) if r.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def teacher_for(cell: Cell, runs: Path = RUNS) -> dict:
    """{"teacher_dir": ...} of the 00_teacher cell `cell` comes after, for a notebook with a `teacher_dir`
    parameter the cell does not set; {} otherwise (`expand` refuses a cell after two teacher cells)."""
    script = Path(cell.path) if cell.path else _notebook_path(cell.notebook)
    if "teacher_dir" in cell.parameters or "teacher_dir" not in notebooks.parameters(script):
        return {}
    dirs = []
    for run_id in cell.after:
        path = result_path(run_id, runs)
        record = json.loads(path.read_text()) if path.exists() else {}
        if record.get("notebook") == "00_teacher":
            dirs.append(record["metrics"]["teacher_dir"])
    return {"teacher_dir": dirs[0]} if len(dirs) == 1 else {}


def run_cell(cell: Cell, runs: Path = RUNS, threads: int | None = None) -> dict:
    """Execute one cell with papermill in a subprocess; write `<run-id>.ipynb` then `<run-id>.json`.

    Partial files are named after this process (`.<run-id>.<host>-<pid>.partial.ipynb`, ...). A failure is
    recorded in `<run-id>.failed.json`, unless another writer has meanwhile finished the cell (its result is
    never touched). A runs folder that cannot be written raises RunsFolderError."""
    import yaml

    runs = Path(runs).resolve()  # the notebook runs in its own folder: every path it gets is absolute
    try:
        runs.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _unwritable(runs, e, "creating it") from e
    _remove_stale_partials(runs, cell.run_id)
    me = _writer()
    partial_nb = runs / f".{cell.run_id}.{me}.partial.ipynb"
    partial_metrics = runs / f".{cell.run_id}.{me}.metrics.partial.json"
    params_file = runs / f".{cell.run_id}.{me}.params.yaml"
    input_nb = runs / f".{cell.run_id}.{me}.input.ipynb"  # the script as a notebook, for papermill
    for p in (partial_nb, partial_metrics):
        p.unlink(missing_ok=True)
    params = {**cell.parameters, **teacher_for(cell, runs), "metrics_path": str(partial_metrics)}
    _write(runs, params_file, yaml.safe_dump(params))
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               STUDYLIB_HOME=str(files.home()))  # the notebook runs in notebooks/: its outputs go to the home
    if threads:
        env |= {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    t0 = time.time()
    script = Path(cell.path) if cell.path else _notebook_path(cell.notebook)
    try:
        notebooks.to_ipynb(script, input_nb)
    except OSError as e:
        raise _unwritable(runs, e, f"starting {cell.run_id}") from e
    proc = subprocess.run([sys.executable, "-m", "papermill", str(input_nb),
                           str(partial_nb), "-f", str(params_file), "-k", "python3", "--cwd", str(script.parent),
                           "--no-progress-bar"], env=env, capture_output=True, text=True)
    seconds = round(time.time() - t0, 1)
    params_file.unlink(missing_ok=True)
    input_nb.unlink(missing_ok=True)
    record = {"run_id": cell.run_id, "notebook": cell.notebook, "parameters": cell.parameters, "after": cell.after,
              "seconds": seconds, "versions": _versions(), "git_commit": _git_commit(),
              "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if proc.returncode != 0 or not partial_metrics.exists():
        lines = [ln for ln in (proc.stderr or proc.stdout).strip().splitlines() if ln.strip()]
        error = next((ln for ln in reversed(lines) if "Error" in ln or "Exception" in ln), lines[-1] if lines else "")
        record |= {"status": "failed", "error": error.strip()[:500], "log_tail": "\n".join(lines[-30:]),
                   "partial_notebook": str(partial_nb)}
        partial_metrics.unlink(missing_ok=True)
        if not is_done(cell.run_id, runs):  # a finished cell is never recorded as failed
            _write(runs, runs / f"{cell.run_id}.failed.json", json.dumps(record, indent=1, default=str))
        return record
    try:
        record |= {"status": "ok", "metrics": json.loads(partial_metrics.read_text())}
        os.replace(partial_nb, runs / f"{cell.run_id}.ipynb")
        (runs / f"{cell.run_id}.failed.json").unlink(missing_ok=True)
    except OSError as e:
        raise _unwritable(runs, e, f"finishing {cell.run_id}") from e
    finally:
        partial_metrics.unlink(missing_ok=True)  # read (or unusable): the record carries the metrics
    _write(runs, result_path(cell.run_id, runs), json.dumps(record, indent=1, default=str))  # last: the marker
    return record


def select(cells: list[Cell], only: str | None) -> list[Cell]:
    """Cells whose run id or notebook matches the glob `only` (plus, if missing, what they come after)."""
    if not only:
        return cells
    chosen = {c.run_id for c in cells if fnmatch.fnmatch(c.run_id, only) or fnmatch.fnmatch(c.notebook, only)}
    if not chosen:
        raise ValueError(f"--only {only!r} matches no cell; run ids are like {cells[0].run_id!r}")
    by_id = {c.run_id: c for c in cells}
    stack = list(chosen)
    while stack:  # dependencies come too (they are skipped if already done)
        for dep in by_id[stack.pop()].after:
            if dep not in chosen:
                chosen.add(dep)
                stack.append(dep)
    return [c for c in cells if c.run_id in chosen]


def make_executor(kind: str, runs: Path = RUNS, jobs: int = 1, **slurm):
    """None for "local" (a thread pool in `sweep`); otherwise a submitit executor writing its job files
    under `runs/.submitit`. `slurm` holds submitit parameters, e.g. slurm_partition="gpu", gpus_per_node=1,
    timeout_min=240, cpus_per_task=8, mem_gb=64 ("submitit-local" runs jobs as local processes: the tests).

    submitit ships each job as a pickle that this same sweep writes into `runs/.submitit` and its own job
    reads back; no pickle from anywhere else is ever loaded."""
    if kind not in EXECUTORS:
        raise ValueError(f"executor={kind!r} is not valid; allowed: {', '.join(EXECUTORS)}")
    if kind == "local":
        if slurm:
            raise ValueError(f"slurm options {sorted(slurm)} need --executor slurm")
        return None
    try:
        import submitit
    except ImportError:
        raise ImportError("--executor slurm needs submitit: pip install -e '.[slurm]'") from None
    folder = runs / ".submitit" / "%j"
    if kind == "slurm":
        ex = submitit.AutoExecutor(folder=folder, cluster="slurm")
        ex.update_parameters(name="studylib-sweep", slurm_array_parallelism=jobs,
                             **{k: v for k, v in slurm.items() if v is not None})
    else:
        ex = submitit.LocalExecutor(folder=folder)
        ex.update_parameters(timeout_min=int(slurm.get("timeout_min") or 60))
    return ex


def sweep(cells: list[Cell], jobs: int = 1, force: bool = False, runs: Path = RUNS, log=print,
          executor=None, poll_seconds: float = 2.0) -> dict:
    """Run the cells that have no result yet, respecting `after`, `jobs` at a time.

    `executor`: None runs cells in local subprocesses; a submitit executor (see `make_executor`) submits
    each cell as a job and polls it. Returns {"done", "skipped", "failed", "blocked"}: lists of run ids.

    Holds the lock on `runs` throughout: a second sweep into the same folder raises `files.Busy` (a
    ValueError naming the holder's pid) at once, having touched nothing. A runs folder that cannot be written
    raises RunsFolderError (the cells already running finish first; finished records are kept)."""
    if jobs < 1:
        raise ValueError(f"--jobs {jobs} must be >= 1")
    runs = Path(runs).resolve()
    held = ExitStack()
    try:
        runs.mkdir(parents=True, exist_ok=True)
        held.enter_context(files.lock(runs / LOCK_NAME, f"the runs folder {runs} (another sweep writes there)"))
    except OSError as e:
        raise _unwritable(runs, e, "taking its lock") from e
    with held:
        return _sweep(cells, jobs, force, runs, log, executor, poll_seconds)


LOCK_NAME = ".sweep.lock"


def _sweep(cells, jobs, force, runs, log, executor, poll_seconds) -> dict:
    cores = os.cpu_count() or 1
    status: dict[str, str] = {}
    for c in cells:
        if force:
            try:
                result_path(c.run_id, runs).unlink(missing_ok=True)
            except OSError as e:
                raise _unwritable(runs, e, f"removing {c.run_id}.json for --force") from e
        elif is_done(c.run_id, runs):
            status[c.run_id] = "skipped"
    in_sweep = {c.run_id for c in cells}
    pending = [c for c in cells if c.run_id not in status]
    log(f"{len(cells)} cells: {len(cells) - len(pending)} already done, {len(pending)} to run ({jobs} at a time)")
    running = {}
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        submit = pool.submit if executor is None else executor.submit
        while pending or running:
            def states(c):
                return [status.get(d) if d in in_sweep else ("skipped" if is_done(d, runs) else "missing")
                        for d in c.after]

            for c in list(pending):
                if any(s in ("failed", "blocked", "missing") for s in states(c)):
                    status[c.run_id] = "blocked"
                    pending.remove(c)
                    log(f"  blocked  {c.run_id} (a cell it comes after failed or is missing)")
            ready = [c for c in pending if all(s in ("done", "skipped") for s in states(c))]
            for c in ready[:jobs - len(running)]:
                # the cores are split between the cells that run now and those ready to: a cell that runs
                # alone (the teacher, first) gets them all; a cluster job uses its own node (threads=None)
                sharing = min(jobs, len(running) + len(ready))
                threads = max(1, cores // sharing) if executor is None else None
                pending.remove(c)
                log(f"  start    {c.run_id}" + (f" ({threads} threads)" if threads else ""))
                running[submit(run_cell, c, runs, threads)] = c
            if not running:
                continue
            if executor is None:
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
            else:  # submitit jobs: poll
                while not (finished := [j for j in running if j.done()]):
                    time.sleep(poll_seconds)
            for fut in finished:
                c = running.pop(fut)
                rec = _job_result(fut, c, runs)
                status[c.run_id] = "done" if rec["status"] == "ok" else "failed"
                tail = "" if rec["status"] == "ok" else f": {rec['error']}"
                log(f"  {status[c.run_id]:<8} {c.run_id} ({rec['seconds']} s){tail}")
    summary = {k: [r for r, s in status.items() if s == k] for k in ("done", "skipped", "failed", "blocked")}
    return summary


def _job_result(job, cell: Cell, runs: Path) -> dict:
    """The record a finished cell returned; a job that died (e.g. killed by SLURM) becomes a failed record."""
    try:
        return job.result()
    except RunsFolderError:
        raise  # the folder cannot hold records: stop the sweep
    except Exception as e:  # noqa: BLE001 - any job failure is recorded, the sweep goes on
        partial = sorted(p for p in _partials(runs, cell.run_id) if p.name.endswith(".partial.ipynb"))
        record = {"run_id": cell.run_id, "notebook": cell.notebook, "parameters": cell.parameters,
                  "after": cell.after, "seconds": 0.0, "status": "failed",
                  "error": f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"[:500],
                  "partial_notebook": str(partial[-1]) if partial else ""}
        if not is_done(cell.run_id, runs):
            _write(runs, runs / f"{cell.run_id}.failed.json", json.dumps(record, indent=1, default=str))
        return record


def collect(runs: Path = RUNS, superseded: bool = False) -> list[dict]:
    """Every finished run record (`<run-id>.json`) under `runs`, in run-id order. A record superseded by a newer
    one of the same notebook and parameters (the code or the teacher changed, so its run id did) is left out,
    unless `superseded`: otherwise the report would pool old and new runs as if they were seeds."""
    out = []
    for p in sorted(runs.glob("*.json")):
        if p.name.startswith(".") or p.name.endswith(".failed.json"):
            continue
        rec = json.loads(p.read_text())
        if isinstance(rec, dict) and rec.get("status") == "ok" and "run_id" in rec:
            out.append(rec)
    if superseded:
        return out
    newest: dict[str, dict] = {}
    for rec in out:
        same = json.dumps([rec.get("notebook"), rec.get("parameters")], sort_keys=True, default=str)
        if same not in newest or str(rec.get("finished", "")) >= str(newest[same].get("finished", "")):
            newest[same] = rec
    kept = {id(r) for r in newest.values()}
    return [r for r in out if id(r) in kept]


def aggregate(runs: Path = RUNS, out: Path | None = None):
    """One row per finished run: run id, notebook, seconds, parameters and scalar metrics; written as CSV."""
    import pandas as pd

    rows = []
    for rec in collect(runs):
        row = {"run_id": rec["run_id"], "notebook": rec["notebook"], "seconds": rec["seconds"],
               "git_commit": rec.get("git_commit")}
        row |= {f"param.{k}": v for k, v in rec["parameters"].items() if not isinstance(v, (list, dict))}
        row |= {f"metric.{k}": v for k, v in rec["metrics"].items() if isinstance(v, (int, float, str, bool))}
        rows.append(row)
    table = pd.DataFrame(rows)
    out = out or runs / "results.csv"
    out = Path(out)
    try:
        files.atomic_write(out, table.to_csv(index=False))
    except OSError as e:
        raise _unwritable(out.parent, e, f"writing {out.name}") from e
    return table
