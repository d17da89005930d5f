"""The study's notebooks. Each one's single source is a jupytext percent script, `notebooks/<name>.py`
(cells start at `# %%`, the parameters cell is `# %% tags=["parameters"]`): what a person edits, in
Jupyter (with jupytext installed, JupyterLab opens it as a notebook) or in any editor, and what git diffs.

The `.ipynb` that papermill executes is made from the script at run time (`to_ipynb`) and never stored
beside it, so there is no second copy to fall out of step: editing one notebook's prose touches one file.
The executed notebooks (with outputs) are the sweep's results, in the runs folder.
"""
from __future__ import annotations

import ast
from pathlib import Path

from .validate import did_you_mean

KERNEL = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
          "language_info": {"name": "python"}}


def names(folder: Path) -> list[str]:
    """The notebooks in `folder`: the stems of its `*.py` scripts."""
    return sorted(p.stem for p in Path(folder).glob("*.py") if not p.name.startswith((".", "_")))


def path(name, folder: Path) -> Path:
    """`folder/<name>.py` for a plain notebook name (no folder, no suffix: `../x` or `/x` are refused)."""
    valid = names(folder)
    if not isinstance(name, str) or name not in valid:
        raise ValueError(f"unknown notebook {name!r}{did_you_mean(name, valid)}; valid notebooks are: "
                         f"{', '.join(valid)} (the name of a jupytext script in {folder}, without .py)")
    return Path(folder) / f"{name}.py"


def read(script: str | Path):
    """The notebook (nbformat v4) of a percent script, with a python3 kernelspec."""
    import jupytext

    nb = jupytext.read(script, fmt="py:percent")
    nb.metadata.update(KERNEL)
    nb.metadata.pop("jupytext", None)
    for i, cell in enumerate(nb.cells):
        cell["id"] = str(i)  # stable ids: the same script gives the same notebook
    return nb


def to_ipynb(script: str | Path, out: str | Path) -> Path:
    """Write the notebook of `script` to `out` (an .ipynb without outputs) and return `out`."""
    import nbformat

    nbformat.write(read(script), str(out))
    return Path(out)


def code_cells(script: str | Path) -> list[tuple[bool, str]]:
    """The code cells of a script, in order, as (tagged `parameters`, source)."""
    return [("parameters" in cell.metadata.get("tags", []), cell.source)
            for cell in read(script).cells if cell.cell_type == "code"]


def parameters(script: str | Path) -> list[str]:
    """The names the `parameters`-tagged cell assigns (what papermill overrides), in order."""
    for tagged, source in code_cells(script):
        if tagged:
            names_: list[str] = []
            for node in ast.walk(ast.parse(source)):
                targets = node.targets if isinstance(node, ast.Assign) else \
                    [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else []
                for target in targets:
                    for n in ast.walk(target):
                        if isinstance(n, ast.Name) and n.id not in names_:
                            names_.append(n.id)
            return names_
    return []
