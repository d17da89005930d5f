"""Run ids follow what a cell runs: the notebook's code cells and the studylib modules they import
(transitively), not its markdown; a change to a module the notebook does not import keeps its run ids."""

import textwrap
from pathlib import Path

import jupytext
import nbformat as nbf
import pytest

from studylib import sweep as S

ROOT = Path(__file__).resolve().parent.parent

# A fake studylib: `a` imports `b` at the top and `c` lazily inside a function; `d` is imported by nobody.
MODULES = {
    "__init__.py": '"""fake studylib"""\n',
    "a.py": "from . import b\n\ndef f():\n    from . import c\n    return c.g()\n",
    "b.py": "from .validate import X  # noqa\n",
    "c.py": "def g():\n    return 1\n",
    "d.py": "from . import b\n",
    "validate.py": "X = 1\n",
}


def notebook(path: Path, imports: str) -> None:
    params = nbf.v4.new_code_cell("x = 1")
    params.metadata["tags"] = ["parameters"]
    nb = nbf.v4.new_notebook(cells=[nbf.v4.new_markdown_cell("# A study\nSome prose."), params,
                                    nbf.v4.new_code_cell(f"{imports}\ny = 2 * x")])
    jupytext.write(nb, path, fmt="py:percent")


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """notebooks/ with `first` (imports studylib.a) and `second` (imports studylib.validate), and a fake
    studylib package (MODULES) that the fingerprint reads instead of the real one."""
    nbdir, pkg = tmp_path / "notebooks", tmp_path / "studylib"
    nbdir.mkdir()
    pkg.mkdir()
    for name, text in MODULES.items():
        (pkg / name).write_text(text)
    notebook(nbdir / "first.py", "from studylib import a")
    notebook(nbdir / "second.py", "import studylib.validate as V")
    monkeypatch.setattr(S, "NOTEBOOKS", nbdir)
    monkeypatch.setattr(S, "PACKAGE", pkg)
    return tmp_path


CFG = {"defaults": {"x": 1}, "cells": [
    {"notebook": "first", "grid": {"x": [1, 2]}},
    {"notebook": "second", "after": ["first"]},
]}


def ids() -> list[str]:
    return [c.run_id for c in S.expand(CFG)]


def edit(path: Path, index: int, text: str) -> None:
    nb = jupytext.read(path)
    nb.cells[index].source += text
    jupytext.write(nb, path, fmt="py:percent")


def test_markdown_outputs_and_metadata_keep_run_ids(fake):
    before = ids()
    path = S.NOTEBOOKS / "first.py"
    edit(path, 0, "\nA typo, fixed.")
    nb = jupytext.read(path)
    nb.cells.append(nbf.v4.new_markdown_cell("More prose"))
    nb.cells[2].outputs = [nbf.v4.new_output("stream", text="printed")]
    nb.cells[2].execution_count = 7
    nb.cells[2].metadata["collapsed"] = True
    nb.metadata["celltoolbar"] = "Tags"
    jupytext.write(nb, path, fmt="py:percent")
    assert ids() == before


def test_a_code_edit_changes_the_notebook_and_what_comes_after(fake):
    before = ids()
    edit(S.NOTEBOOKS / "first.py", 2, "\n# edited")
    after = ids()
    assert all(a != b for a, b in zip(after, before)), (before, after)
    assert [i.rsplit("-", 1)[0] for i in after] == [i.rsplit("-", 1)[0] for i in before]  # readable part kept
    edit(S.NOTEBOOKS / "second.py", 2, "\n# edited")
    again = ids()
    assert again[:2] == after[:2] and again[2] != after[2]


def test_moving_the_parameters_tag_changes_run_ids(fake):
    before = ids()
    path = S.NOTEBOOKS / "first.py"
    nb = jupytext.read(path)
    nb.cells[1].metadata["tags"] = []
    jupytext.write(nb, path, fmt="py:percent")
    assert ids()[0] != before[0]


@pytest.mark.parametrize("module, first_changes, second_changes", [
    ("a.py", True, False),           # imported by first
    ("b.py", True, False),           # imported by a, at the top
    ("c.py", True, False),           # imported by a inside a function
    ("validate.py", True, True),     # imported by b (first) and by second itself
    ("__init__.py", True, True),     # run by every import of studylib
    ("d.py", False, False),          # imported by nobody
])
def test_a_library_change_reruns_what_imports_it(fake, module, first_changes, second_changes):
    before = ids()
    (S.PACKAGE / module).write_text(MODULES[module] + "\n# changed\n")
    after = ids()
    assert (after[0] != before[0], after[1] != before[1]) == (first_changes, first_changes)
    assert (after[2] != before[2]) == (second_changes or first_changes), "second comes after first"
    alone = S.expand({"cells": [{"notebook": "second"}]})[0].run_id
    (S.PACKAGE / module).write_text(MODULES[module])
    assert (S.expand({"cells": [{"notebook": "second"}]})[0].run_id != alone) == second_changes
    assert ids() == before, "the same sources give the same run ids"


def test_the_import_walk(fake):
    assert S.notebook_modules("first") == ["", "a", "b", "c", "validate"]
    assert S.notebook_modules("second") == ["", "validate"]
    assert S._studylib_imports("def f():\n    from . import c\n", "a") == ("", "c")
    assert S._studylib_imports("from .b import X\nimport os\nfrom pathlib import Path\n", "a") == ("b",)
    assert S._studylib_imports("import studylib.a, numpy\nfrom studylib.b import X\n", None) == ("a", "b")
    assert S._studylib_imports("from studylib import a, helper\n", None) == ("", "a")  # helper: no module
    assert S._studylib_imports("from . import a\n", None) == ()  # relative: only inside the package
    assert S._studylib_imports("%matplotlib inline\n!ls\nfrom studylib import c\n", None) == ("", "c")


def test_a_cell_that_does_not_parse_covers_the_whole_package(fake):
    notebook(S.NOTEBOOKS / "first.py", "from studylib import a\nnot python (")
    assert S.notebook_modules("first") == ["", "a", "b", "c", "d", "validate"]


def test_the_real_notebooks():
    assert S.load_config(ROOT / "configs" / "default.yaml")
    layerwise, report = S.notebook_modules("01_layerwise"), S.notebook_modules("99_report")
    assert {"pruning", "evaluation", "data", "models", "teacher", "pruned_modeling"} <= set(layerwise)
    assert "report" not in layerwise and "recovery" not in layerwise
    assert {"report", "sweep"} <= set(report) and "pruning" not in report
    assert "recovery" in S.notebook_modules("03_recovery")
    assert len(S.code_fingerprint("01_layerwise")) == 10
    assert S.code_fingerprint("01_layerwise") == S.code_fingerprint("01_layerwise")


def test_the_real_package_change_reruns_only_what_imports_it(tmp_path, monkeypatch):
    """A copy of the real studylib, with report.py edited: 99_report's fingerprint changes, 01_layerwise's not."""
    pkg = tmp_path / "studylib"
    pkg.mkdir()
    for path in S.PACKAGE.glob("*.py"):
        (pkg / path.name).write_bytes(path.read_bytes())
    monkeypatch.setattr(S, "PACKAGE", pkg)
    before = {n: S.code_fingerprint(n) for n in ("01_layerwise", "99_report")}
    (pkg / "report.py").write_text((pkg / "report.py").read_text() + textwrap.dedent("""
        # a change to the report
    """))
    assert S.code_fingerprint("01_layerwise") == before["01_layerwise"]
    assert S.code_fingerprint("99_report") != before["99_report"]
    (pkg / "pruning.py").write_text((pkg / "pruning.py").read_text() + "\n# a change to pruning\n")
    assert S.code_fingerprint("01_layerwise") != before["01_layerwise"]
