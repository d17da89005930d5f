"""Report pages: executed notebooks rendered to HTML (code hidden) and an index linking them."""

from __future__ import annotations

import html
import json
from pathlib import Path

REPORTS = Path(__file__).resolve().parent.parent / "reports"
NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def run_notebook(name: str, parameters: dict, out_dir: str | Path | None = None, **kw) -> Path:
    """Execute `notebooks/<name>.ipynb` with papermill into `<out_dir>/<name>.ipynb` (never over the source).

    The output is written to a temporary name and renamed when the run succeeded, so a partial notebook
    is never mistaken for a result.
    """
    import papermill as pm

    src = NOTEBOOKS / f"{name}.ipynb"
    if not src.exists():
        valid = sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))
        raise ValueError(f"unknown notebook {name!r}; valid notebooks are: {', '.join(valid)}")
    out_dir = Path(out_dir) if out_dir else REPORTS / "runs"
    out_dir.mkdir(parents=True, exist_ok=True)
    out, tmp = out_dir / f"{name}.ipynb", out_dir / f".{name}.partial.ipynb"
    pm.execute_notebook(str(src), str(tmp), parameters=parameters, kernel_name="python3",
                        cwd=str(NOTEBOOKS), progress_bar=False, **kw)
    tmp.replace(out)
    return out


def render_html(notebook: str | Path, out_html: str | Path) -> Path:
    """Executed notebook -> standalone HTML page with the code cells hidden (nbconvert)."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(notebook), as_version=4)
    body, _ = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True).from_notebook_node(nb)
    Path(out_html).write_text(body)
    return Path(out_html)


def _title(notebook: Path) -> str:
    nb = json.loads(notebook.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            first = "".join(cell["source"]).strip().splitlines()[0]
            return first.lstrip("# ").strip()
    return notebook.stem


def build_report(runs_dir: str | Path | None = None, reports_dir: str | Path | None = None) -> Path:
    """Render every executed notebook in `runs_dir` to `reports_dir/<name>.html`; write `index.html`."""
    reports = Path(reports_dir) if reports_dir else REPORTS
    runs = Path(runs_dir) if runs_dir else reports / "runs"
    pages = []
    for nb in sorted(runs.glob("[!.]*.ipynb")):
        page = render_html(nb, reports / f"{nb.stem}.html")
        pages.append((page.name, _title(nb)))
    items = "\n".join(f'<li><a href="{html.escape(href)}">{html.escape(t)}</a></li>' for href, t in pages)
    index = reports / "index.html"
    index.write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>Pruning and recovery of MLLMs: the study</title>"
        "<style>body{font-family:sans-serif;max-width:50em;margin:2em auto}</style></head><body>"
        "<h1>Structural pruning and recovery of multimodal LLMs</h1>"
        "<p>Pages rendered from the executed notebooks of the last <code>make study</code>.</p>"
        f"<ul>\n{items}\n</ul></body></html>\n"
    )
    return index
