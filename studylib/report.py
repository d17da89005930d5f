"""Report pages: executed notebooks rendered to HTML (code hidden) and an index that answers first.

The pages are self-contained and offline: math is typeset by a local copy of MathJax 2 (the one the
`jupyter-server-mathjax` package ships, copied into `<reports>/mathjax/`, SVG output, so no web fonts), images
are embedded (notebook outputs) or relative (`figures/`, `thumbs/`), tables link CSV files under `tables/`:
the whole `reports/` folder can be zipped and opened anywhere. What a reader must not see is removed when a
notebook is rendered: stderr (progress bars, warnings), and this machine's absolute paths.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import re
import shutil
import time
from pathlib import Path

from . import files
from .claims import BUDGETS, RATIO_BANDS

REPORTS = files.home() / "reports"  # the project home's (files.home: $STUDYLIB_HOME or the current directory)
NOTEBOOKS = files.home() / "notebooks"


def run_notebook(name: str, parameters: dict, out_dir: str | Path | None = None, out_name: str | None = None,
                 **kw) -> Path:
    """Execute the notebook of `notebooks/<name>.py` with papermill into `<out_dir>/<name>.ipynb`.

    The output is written to a temporary name and renamed when the run succeeded, so a partial notebook
    is never mistaken for a result.
    """
    import papermill as pm

    from . import notebooks

    script = notebooks.path(name, NOTEBOOKS)
    out_dir = Path(out_dir) if out_dir else REPORTS / "runs"
    out_dir.mkdir(parents=True, exist_ok=True)
    out_name = out_name or name
    out, tmp = out_dir / f"{out_name}.ipynb", out_dir / f".{out_name}.partial.ipynb"
    os.environ.setdefault("STUDYLIB_HOME", str(files.home()))  # the kernel runs in notebooks/, writes to the home
    pm.execute_notebook(notebooks.read(script), str(tmp), parameters=parameters, kernel_name="python3",
                        cwd=str(NOTEBOOKS), progress_bar=False, **kw)
    tmp.replace(out)
    return out


# ----------------------------------------------------------------------------------------------
# Offline pages: local MathJax, no CDN scripts, stderr and absolute paths removed

def install_mathjax(reports: str | Path) -> Path:
    """Copy the MathJax 2 of `jupyter-server-mathjax` into `<reports>/mathjax/` (once per version): its combined
    configuration (TeX input, HTML-CSS output), the STIX web fonts, the extensions and the English messages
    (about 3 MB). Returns the path of `MathJax.js`."""
    from importlib.metadata import version

    import jupyter_server_mathjax

    src = Path(jupyter_server_mathjax.__file__).parent / "static"
    dst = Path(reports) / "mathjax"
    stamp, want = dst / "VERSION", f"jupyter-server-mathjax {version('jupyter-server-mathjax')}, HTML-CSS + STIX-Web\n"
    if not (stamp.exists() and stamp.read_text() == want and (dst / "MathJax.js").exists()):
        shutil.rmtree(dst, ignore_errors=True)
        for part in ("MathJax.js", "LICENSE", "config", "extensions", "jax/input", "jax/element",
                     "jax/output/HTML-CSS", "fonts/HTML-CSS/STIX-Web/woff", "localization/en"):
            s, d = src / part, dst / part
            d.parent.mkdir(parents=True, exist_ok=True)
            if s.is_dir():
                shutil.copytree(s, d, ignore=shutil.ignore_patterns("a11y"))
            else:
                shutil.copy2(s, d)
        stamp.write_text(want)
    return dst / "MathJax.js"


MATHJAX_CONFIG = r"""<script type="text/x-mathjax-config">
MathJax.Hub.Config({
  config: ["TeX-AMS-MML_HTMLorMML-full.js", "Safe.js"],
  TeX: {equationNumbers: {autoNumber: "AMS", useLabelIds: true}},
  tex2jax: {inlineMath: [["$", "$"], ["\\(", "\\)"]], displayMath: [["$$", "$$"], ["\\[", "\\]"]],
            processEscapes: true, processEnvironments: true},
  "HTML-CSS": {availableFonts: [], webFont: "STIX-Web", preferredFont: null, imageFont: null, scale: 92,
               linebreaks: {automatic: true}},
  menuSettings: {renderer: "HTML-CSS"}, showMathMenu: false, messageStyle: "none", displayAlign: "center"
});
</script>"""

# Shared by every page: readable width, tables for reading, verdict badges, the index's cards.
PAGE_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main, .page { max-width: 78rem; margin: 0 auto; }
nav.studylib-nav { max-width: 78rem; margin: 0.6rem auto 0; font-size: 0.9rem; }
nav.studylib-nav a { color: #1a5fb4; text-decoration: none; }
table.study-table, .jp-RenderedHTMLCommon table.dataframe {
  border-collapse: collapse; font-size: 0.88rem; margin: 0.6rem 0 1rem; border: none;
  font-variant-numeric: tabular-nums; }
table.study-table th, table.study-table td, .jp-RenderedHTMLCommon table.dataframe th,
.jp-RenderedHTMLCommon table.dataframe td {
  padding: 0.3rem 0.7rem; border: none; border-bottom: 1px solid #e3e3e3; vertical-align: top; }
table.study-table thead th, .jp-RenderedHTMLCommon table.dataframe thead th {
  border-bottom: 2px solid #444; text-align: left; font-weight: 600; background: #fafafa; }
table.study-table tbody tr:nth-child(even), .jp-RenderedHTMLCommon table.dataframe tbody tr:nth-child(even) {
  background: #f7f8fa; }
table.study-table caption { caption-side: top; text-align: left; font-weight: 600; padding: 0.2rem 0; }
table.study-table th, table.study-table td,
.jp-RenderedHTMLCommon table.study-table th, .jp-RenderedHTMLCommon table.study-table td { text-align: left; }
table.study-table td.num, .jp-RenderedHTMLCommon table.study-table td.num { text-align: right; white-space: nowrap; }
table.study-table td.text { max-width: 34rem; min-width: 10rem; }
.jp-RenderedHTMLCommon table.study-table { font-size: 0.88rem; table-layout: auto; }
.verdict { display: inline-block; padding: 0.05rem 0.55rem; border-radius: 0.7rem; font-weight: 600;
  font-size: 0.82rem; white-space: nowrap; }
.verdict-yes { background: #d7f0dc; color: #145a24; }
.verdict-no { background: #f8d9d6; color: #8a1c12; }
.verdict-none { background: #ececec; color: #555; }
.verdict-undecided { background: #fbefc9; color: #6b4e00; }
.table-note { font-size: 0.85rem; color: #555; margin-top: -0.6rem; }
"""

TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block html_head_js_mathjax -%}
<meta name="studylib-report" content="{{ resources.studylib_version }}">
""" + MATHJAX_CONFIG + """
<script src="{{ resources.studylib_mathjax }}"></script>
{%- endblock html_head_js_mathjax -%}
{% block extra_css %}<style type="text/css">{{ resources.studylib_css }}</style>{% endblock extra_css %}
{%- block body_header -%}
{{ super() }}
{%- if resources.studylib_index %}
<nav class="studylib-nav"><a href="{{ resources.studylib_index }}">&larr; the study's index</a></nav>
{%- endif %}
{%- endblock body_header -%}
"""

# pages rendered by another template or cleaning are rendered again
RENDER_VERSION = "3-" + files.key(TEMPLATE + PAGE_CSS)

# an absolute POSIX path in text: a "/" not preceded by a word, a dot, "~", ":" or "/" (so no URL, no
# relative path, no closing tag), then at least one "name/" segment
ABSOLUTE_PATH = re.compile(r"(?<![\w.~:/\\-])/(?:[\w.@+-]+/)+[\w.@+-]*")


def scrub_paths(text: str, roots: list[tuple[str, str]] = ()) -> str:
    """`text` without absolute paths: each prefix in `roots` (absolute folder, what to show instead; longest
    first) is replaced, the project home by nothing (so `data/checkpoints/...` is left), the home folder by
    `~`, and any other absolute path by its last folder and name (`.../runs/x.json`)."""
    subs = sorted([*roots, (str(files.home()), ""), (str(Path.home()), "~")], key=lambda r: -len(r[0]))
    for prefix, shown in subs:
        if len(prefix) > 1:
            text = text.replace(prefix + "/", f"{shown}/" if shown else "")
            text = re.sub(re.escape(prefix) + r"(?![\w.@+-])", shown or ".", text)

    def tail(m):
        parts = m.group(0).rstrip("/").split("/")
        return "\u2026/" + "/".join(parts[-2:]) + ("/" if m.group(0).endswith("/") else "")

    return ABSOLUTE_PATH.sub(tail, text)


_RANGE_TH = re.compile(r"(<tr[^>]*>)\s*<th>(\d+)</th>")


def drop_range_index(table_html: str) -> str:
    """A pandas `to_html` table whose index is 0, 1, ..., n-1 (a RangeIndex: no information) without that
    column; any other table is returned unchanged."""
    if table_html.count("<table") != 1 or 'class="dataframe"' not in table_html:
        return table_html
    head, sep, body = table_html.partition("<tbody>")
    if not sep or head.count("<tr") != 1 or not re.search(r"<tr[^>]*>\s*<th></th>", head):
        return table_html
    rows = re.findall(r"<tr[^>]*>", body)
    labels = [int(m.group(2)) for m in _RANGE_TH.finditer(body)]
    if not rows or labels != list(range(len(rows))):
        return table_html
    head = re.sub(r"(<tr[^>]*>)\s*<th></th>", r"\1", head, count=1)
    return head + sep + _RANGE_TH.sub(r"\1", body)


def clean_notebook(nb, roots: list[tuple[str, str]] = ()):
    """The executed notebook as a reader should see it (in place): stderr outputs (progress bars, warnings)
    removed, absolute paths scrubbed from text and HTML outputs, RangeIndex columns dropped from tables."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = scrub_paths(cell.source, roots)
        if cell.cell_type != "code":
            continue
        kept = []
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                if out.get("name") == "stderr":
                    continue
                out["text"] = scrub_paths(out.get("text", ""), roots)
            elif out.get("output_type") in ("display_data", "execute_result"):
                data = out.get("data", {})
                for mime in ("text/plain", "text/html", "text/markdown", "text/latex"):
                    if mime in data:
                        text = data[mime] if isinstance(data[mime], str) else "".join(data[mime])
                        text = scrub_paths(text, roots)
                        data[mime] = drop_range_index(text) if mime == "text/html" else text
            kept.append(out)
        cell["outputs"] = kept
    return nb


def render_html(notebook: str | Path, out_html: str | Path, reports_dir: str | Path | None = None,
                title: str | None = None, index: str | Path | None = None) -> Path:
    """Executed notebook -> standalone HTML page (nbconvert, code hidden), offline: MathJax from
    `<reports_dir>/mathjax` (default: the page's folder), no CDN script, stderr and absolute paths removed
    (`clean_notebook`), tables styled. `index`: the index page to link at the top."""
    import jinja2
    import nbformat
    from nbconvert import HTMLExporter

    out_html = Path(out_html)
    reports = Path(reports_dir) if reports_dir else out_html.parent
    mathjax = install_mathjax(reports)
    nb = nbformat.read(str(notebook), as_version=4)
    roots = [(str(reports.resolve()), reports.resolve().name)]
    clean_notebook(nb, roots)
    if title:
        nb.metadata["title"] = title
    exporter = HTMLExporter(template_name="lab", template_file="studylib.html.j2",
                            extra_loaders=[jinja2.DictLoader({"studylib.html.j2": TEMPLATE})],
                            exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    rel = lambda p: os.path.relpath(Path(p).resolve(), out_html.parent.resolve()).replace(os.sep, "/")  # noqa: E731
    resources = {"studylib_mathjax": rel(mathjax), "studylib_css": PAGE_CSS, "studylib_version": RENDER_VERSION,
                 "studylib_index": rel(index) if index else ""}
    body, _ = exporter.from_notebook_node(nb, resources=resources)
    out_html.parent.mkdir(parents=True, exist_ok=True)
    out_html.write_text(body)
    return out_html


def _rendered_by_this_version(page: Path) -> bool:
    with open(page, encoding="utf-8", errors="replace") as f:
        return f'name="studylib-report" content="{RENDER_VERSION}"' in f.read(20000)


# ----------------------------------------------------------------------------------------------
# Tables made for reading: no index, rounded numbers, units in headers, intervals as "x ± h"

def _decimals(values) -> int:
    """Decimals that show about three significant digits of the typical magnitude (0 for whole numbers)."""
    import numpy as np

    v = np.abs(np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float))
    if not len(v) or np.allclose(v, np.round(v), rtol=0, atol=1e-9):
        return 0
    typical = float(np.median(v[v > 0])) if np.any(v > 0) else 1.0
    return int(min(4, max(0, 2 - math.floor(math.log10(typical)))))


def _number(x, decimals: int, percent: bool = False) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "\u2013"
    return f"{100 * x:.{decimals}f} %" if percent else f"{x:,.{decimals}f}"


def interval_columns(columns) -> dict[str, tuple[str, ...]]:
    """For each column `c` with an interval: `c_ci` (half-width) -> ("ci", c_ci), `c_lo` and `c_hi` ->
    ("lo", c_lo, c_hi)."""
    cols, out = set(columns), {}
    for c in columns:
        if f"{c}_ci" in cols:
            out[c] = ("ci", f"{c}_ci")
        elif f"{c}_lo" in cols and f"{c}_hi" in cols:
            out[c] = ("lo", f"{c}_lo", f"{c}_hi")
    return out


def reader_frame(df, digits: int | dict | None = None, units: dict | None = None, rename: dict | None = None,
                 percent: list | tuple = ()):
    """`df` as strings for a reader: every number rounded (`digits`: one count for all, a dict per column, or
    about three significant digits by default), columns in `percent` (fractions) shown as "30 %", a column `c`
    with `c_ci` (half-width) or `c_lo`/`c_hi` (bounds) shown as "x ± h" (or "x [lo, hi]" when the bounds are not
    symmetric) and its interval columns dropped, headers renamed (`rename`) and given units (`units`:
    column -> unit, "AVG" -> "AVG (%)"), missing values as a dash. Returns (frame, numeric column names)."""
    import pandas as pd

    intervals = interval_columns(df.columns)
    helpers = {c for spec in intervals.values() for c in spec[1:]}
    out, numeric = {}, []
    for c in [c for c in df.columns if c not in helpers]:
        s = df[c]
        is_num = pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)
        if not is_num:
            out[c] = ["\u2013" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v) for v in s]
            continue
        pct = c in percent
        d = digits.get(c) if isinstance(digits, dict) else digits
        if d is None:
            d = _decimals((s * 100 if pct else s).tolist())
        vals = [_number(v, d, pct) for v in s]
        if c in intervals:
            spec = intervals[c]
            for i, v in enumerate(s):
                if spec[0] == "ci":
                    h = df[spec[1]].iloc[i]
                    if pd.notna(h) and pd.notna(v):
                        vals[i] += f" \u00b1 {_number(h, d, pct)}"
                else:
                    lo, hi = df[spec[1]].iloc[i], df[spec[2]].iloc[i]
                    if pd.notna(lo) and pd.notna(hi) and pd.notna(v):
                        half = (hi - lo) / 2
                        scale = 100 if pct else 1
                        if round(scale * (v - lo), d) == round(scale * (hi - v), d):
                            vals[i] += f" \u00b1 {_number(half, d, pct)}"
                        else:
                            vals[i] += f" [{_number(lo, d, pct)}, {_number(hi, d, pct)}]"
        out[c] = vals
        numeric.append(c)
    frame = pd.DataFrame(out, columns=list(out))
    names = {}
    for c in frame.columns:
        name = (rename or {}).get(c, c)
        unit = (units or {}).get(c)
        names[c] = f"{name} ({unit})" if unit else name
    return frame.rename(columns=names), [names[c] for c in numeric]


VERDICTS = {"yes": ("verdict-yes", "held"), "no": ("verdict-no", "did not hold"),
            "undecided": ("verdict-undecided", "undecided"), "no evidence": ("verdict-none", "no evidence")}


def verdict_badge(held: str) -> str:
    css, label = VERDICTS.get(held, ("verdict-none", held))
    return f'<span class="verdict {css}">{html.escape(label)}</span>'


def styled(df, caption: str | None = None, verdict: str | None = None, **fmt):
    """A pandas Styler for a reader (`reader_frame`'s rounding, units and intervals): no index column,
    numbers right-aligned in tabular figures, long text wrapped, the `verdict` column ('yes' / 'no' /
    'no evidence') drawn as a badge."""
    frame, numeric = reader_frame(df, **fmt)
    badge = None
    if verdict is not None:
        name = (fmt.get("rename") or {}).get(verdict, verdict)
        badge = next((c for c in frame.columns if c == name or c.startswith(f"{name} (")), None)
        if badge:
            frame[badge] = [verdict_badge(v) for v in frame[badge]]
    sty = frame.style.hide(axis="index").set_table_attributes('class="study-table"')
    classes = frame.copy()
    for c in frame.columns:
        classes[c] = "num" if c in numeric else ("text" if frame[c].str.len().max() > 40 else "")
    sty = sty.set_td_classes(classes)
    sty = sty.set_table_styles([{"selector": f"th.col{i}", "props": "text-align: right;"}
                                for i, c in enumerate(frame.columns) if c in numeric], overwrite=False)
    if badge:
        sty = sty.format(lambda v: v, subset=[badge], escape=None)
    others = [c for c in frame.columns if c != badge]
    if others:
        sty = sty.format(lambda v: v, subset=others, escape="html")
    if caption:
        sty = sty.set_caption(html.escape(caption))
    return sty


def table_html(df, caption: str | None = None, verdict: str | None = None, **fmt) -> str:
    """`styled(...)` as an HTML fragment (for pages written outside a notebook, such as the index)."""
    return styled(df, caption=caption, verdict=verdict, **fmt).to_html()


def show(df, caption: str | None = None, csv: str | Path | None = None, link_from: str | Path | None = None,
         max_rows: int = 25, verdict: str | None = None, note: str | None = None, full=None, **fmt):
    """Display `df` in a notebook as a reader's table (`styled`). A table longer than `max_rows` is cut there
    on the page; with `csv`, the full data (`full`, default `df` itself, unrounded) is also written to that file
    and linked, relative to `link_from` (the folder of the rendered page; default the CSV's parent's parent)."""
    from IPython.display import HTML, display

    parts = []
    shown = df.head(max_rows) if len(df) > max_rows else df
    if not len(df):
        parts.append(f'<p class="table-note">{html.escape(caption + ": ") if caption else ""}no rows'
                     " (nothing measured for this table in this sweep)</p>")
    else:
        parts.append(table_html(shown, caption=caption, verdict=verdict, **fmt))
    notes = [note] if note else []
    if len(df) > max_rows:
        notes.append(f"first {max_rows} of {len(df)} rows")
    data = df if full is None else full
    if csv is not None and len(data):
        csv = Path(csv)
        csv.parent.mkdir(parents=True, exist_ok=True)
        data.to_csv(csv, index=False)
        base = Path(link_from) if link_from else csv.parent.parent
        href = os.path.relpath(csv.resolve(), base.resolve()).replace(os.sep, "/")
        notes.append(f'full table ({len(data)} rows \u00d7 {len(data.columns)} columns): '
                     f'<a href="{html.escape(href)}">{html.escape(csv.name)}</a>')
    if notes:
        parts.append(f'<p class="table-note">{"; ".join(notes)}</p>')
    display(HTML("".join(parts)))


# ----------------------------------------------------------------------------------------------
# Names a reader understands

CRITERIA = {"bi": "BI", "angular": "angular distance", "loss": "loss", "deepest": "deepest blocks",
            "random": "random", "taylor": "Taylor", "taylor-vector": "Taylor (vector)", "l1": "L1", "l2": "L2",
            "activation": "activation", "wanda": "Wanda"}
TRAINS = {"projector": "projector", "lora": "LoRA", "full": "full finetuning", "none": "no recovery"}
LOSSES = {"ce": "CE", "kl": "logit KD", "hidden": "hidden KD"}


def criterion_label(c) -> str:
    return CRITERIA.get(str(c), str(c))


def loss_label(loss: str) -> str:
    """'ce+hidden' -> 'CE + hidden KD'."""
    return " + ".join(LOSSES.get(p, p) for p in str(loss).split("+"))


def recipe_label(recipe: str) -> str:
    """'lora:ce+hidden' -> 'LoRA, CE + hidden KD'; 'lora:ce+hidden/blocks' -> 'LoRA, CE + hidden KD
    (blocks)'; 'none' -> 'no recovery'."""
    if recipe == "none" or ":" not in str(recipe):
        return TRAINS.get(recipe, str(recipe))
    train, loss = recipe.split(":", 1)
    loss, *variants = loss.split("/")
    return f"{TRAINS.get(train, train)}, {loss_label(loss)}" + "".join(f" ({v})" for v in variants)


def _pct(x) -> str:
    return f"{100 * float(x):.0f} %" if isinstance(x, (int, float)) and math.isfinite(x) else str(x)


def _avg(x) -> str:
    return f"{x:.1f}" if isinstance(x, (int, float)) and math.isfinite(x) else "n/a (the teacher scores 0)"


def _share(m: dict) -> str:
    f, rec = m.get("data_fraction"), m.get("recovery") or {}
    if isinstance(f, int) and not isinstance(f, bool):
        of = rec.get("of_examples")
        return f"{f:,} examples" + (f" ({100 * f / of:.0f} % of the data)" if of else "")
    return f"{_pct(f)} of the data" if f is not None else "all the data"


SECTIONS = {"00_teacher": "The teacher", "01_layerwise": "Layerwise pruning", "02_widthwise": "Widthwise pruning",
            "03_recovery": "Recovery", "04_data_efficiency": "Data efficiency", "05_efficiency": "Speed and memory",
            "06_from_scratch": "From scratch"}


def run_title(rec: dict) -> str:
    """A run named by its parameters, with its key number: "Recovery: widthwise Taylor 30 %, LoRA, CE + hidden
    KD, 5 % of the data: AVG % 92.5"."""
    nb, m, p = rec.get("notebook", "?"), rec.get("metrics") or {}, rec.get("parameters") or {}
    section = SECTIONS.get(nb, nb)
    try:
        if nb == "00_teacher":
            score = (m.get("scores") or {}).get("image_mean")
            n = p.get("n_train", (m.get("train") or {}).get("config", {}).get("n_train"))
            return (f"{section}: {m.get('preset', p.get('preset', '?'))}, "
                    + (f"{n:,} training conversations, " if isinstance(n, int) else "")
                    + f"seed {m.get('seed', p.get('seed', 0))}: mean accuracy on the image benchmarks "
                    + (f"{score:.3f}" if isinstance(score, (int, float)) else "n/a"))
        if nb in ("01_layerwise", "02_widthwise"):
            crits = p.get("criteria") or [m.get("criterion")]
            points = [f"{_avg(r['avg_percent'])} at {_pct(r['requested_ratio'])}" for r in m.get("per_ratio", [])]
            defined = [r for r in m.get("per_ratio", []) if math.isfinite(r.get("avg_percent", float("nan")))]
            key = (f"AVG % {', '.join(points)} ({criterion_label(m.get('criterion'))})" if defined
                   else "AVG % n/a (the teacher scores 0)")
            ratios = ", ".join(_pct(r) for r in p.get("ratios", [r["requested_ratio"] for r in m.get("per_ratio", [])]))
            return f"{section}: {', '.join(criterion_label(c) for c in crits)} at {ratios}, no recovery: {key}"
        if nb == "03_recovery":
            r = m.get("recipe") or {"train": p.get("train"), "loss": p.get("loss")}
            return (f"{section}: {m.get('paradigm', p.get('paradigm'))} {criterion_label(m.get('criterion', p.get('criterion')))} "
                    f"{_pct(m.get('ratio', p.get('ratio')))}, {TRAINS.get(r['train'], r['train'])}, "
                    f"{loss_label(r['loss'])}, {_share(m or p)}: AVG % {_avg(m.get('avg_percent_recovered'))}")
        if nb == "04_data_efficiency":
            r = m.get("recipe") or {"train": p.get("train"), "loss": p.get("loss")}
            curve = m.get("curve", [])
            fr = [c["fraction"] for c in curve] or p.get("fractions", [])
            avgs = [c.get("AVG %") for c in curve]
            key = (" \u2192 ".join(_avg(a) for a in avgs) if any(isinstance(a, (int, float)) and math.isfinite(a)
                                                                 for a in avgs) else "n/a (the teacher scores 0)")
            return (f"{section}: {m.get('paradigm', p.get('paradigm'))} {criterion_label(m.get('criterion', p.get('criterion')))} "
                    f"{_pct(m.get('ratio', p.get('ratio')))}, {TRAINS.get(r['train'], r['train'])}, {loss_label(r['loss'])}, "
                    f"{', '.join(_pct(f) for f in fr)} of the data: AVG % {key}")
        if nb == "06_from_scratch":
            b = m.get("budget") or {}
            return (f"{section}: the size of {m.get('paradigm', p.get('paradigm'))} {_pct(m.get('ratio', p.get('ratio')))}, "
                    f"{b.get('examples_scratch', '?')} examples (the compute of pruning + recovery): AVG % "
                    f"{_avg(m.get('avg_percent_scratch'))}")
        if nb == "05_efficiency":
            models = m.get("models") or {}
            ratios = sorted({v.get("requested_ratio") for v in models.values() if v.get("requested_ratio") is not None})
            prefill = [s for s in m.get("speedups", []) if s.get("metric") == "prefill_ms"
                       and s.get("batch_size") == m.get("goal_batch_size") and s.get("model") != "teacher"]
            best = max(prefill, key=lambda s: s.get("speedup", 0), default=None)
            key = (f"best prefill speedup {best['speedup']:.2f}\u00d7 ({best['model']}, batch {m.get('goal_batch_size')})"
                   if best else "no speedups measured")
            return (f"{section}: the teacher and {len(models)} pruned models at {', '.join(_pct(r) for r in ratios)} "
                    f"on {m.get('device', p.get('device', 'cpu'))}: {key}")
    except (KeyError, TypeError, ValueError):
        pass
    shown = ", ".join(f"{k} = {v}" for k, v in p.items()) or "default parameters"
    return f"{section}: {shown}"


def _distinguish(titles: list[str], records: list[dict]) -> list[str]:
    """Runs of one notebook whose titles coincide get the parameters that tell them apart."""
    out = list(titles)
    for t in set(titles):
        same = [i for i, x in enumerate(titles) if x == t]
        if len(same) < 2:
            continue
        params = [records[i].get("parameters") or {} for i in same]
        keys = sorted({k for q in params for k in q if len({json.dumps(x.get(k), sort_keys=True) for x in params}) > 1})
        for i, q in zip(same, params):
            if keys:
                out[i] = f"{t} ({', '.join(f'{k} = {q.get(k)}' for k in keys)})"
    return out


# ----------------------------------------------------------------------------------------------
# The study's figures: retention against the achieved ratio, and per-benchmark radar plots

STYLE_CYCLE = [("o", "-"), ("s", "--"), ("^", "-."), ("D", ":"), ("v", "-"), ("P", "--"), ("X", "-."), ("*", ":")]


def _recipe_styles(recipes):
    import matplotlib.pyplot as plt

    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    order = sorted(recipes, key=lambda r: (r != "none", r))
    return {r: dict(color="0.35" if r == "none" else colors[i % len(colors)], marker=STYLE_CYCLE[i % 8][0],
                    ls=STYLE_CYCLE[i % 8][1]) for i, r in enumerate(order)}


def _legend(axes, first: list[str]):
    """One legend for all panels: the labels in `first` (the recipes, in style order), then the references."""
    found = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            found.setdefault(lab, h)
    labels = [lab for lab in first if lab in found] + [lab for lab in found if lab not in first]
    return [found[lab] for lab in labels], labels


def retention_figure(view):
    """AVG % of the teacher against the achieved compression (share of LM parameters removed), one panel per
    paradigm, one line per recipe (`claims.retention(...)` rows) with its 95 % interval as a band where the
    records have one; the teacher is the point (0 %, 100 %), the dotted line 95 %. Legend outside the data. Returns the figure (None without rows)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import PercentFormatter

    if view is None or not len(view):
        return None
    paradigms = sorted(view["paradigm"].unique())
    styles = _recipe_styles(view["recipe"].unique())
    fig, axes = plt.subplots(1, len(paradigms), figsize=(5.2 * len(paradigms) + 2.2, 4), sharey=True, squeeze=False)
    for ax, p in zip(axes[0], paradigms):
        sub = view[view["paradigm"] == p]
        for recipe, st in styles.items():
            rows = sub[sub["recipe"] == recipe]
            g = rows.loc[rows.groupby("lm_ratio")["avg_percent"].idxmax()].sort_values("lm_ratio") if len(rows) else rows
            if not len(g):
                continue
            x, y = [0.0, *g["lm_ratio"]], [100.0, *g["avg_percent"]]
            line, = ax.plot(x, y, label=recipe_label(recipe), lw=1.8, ms=6, **st)
            if "avg_percent_lo" in g and g["avg_percent_lo"].notna().all():  # its 95 % interval over items
                ax.fill_between(g["lm_ratio"], g["avg_percent_lo"], g["avg_percent_hi"], color=line.get_color(),
                                alpha=0.15, lw=0)
        ax.plot([0], [100], marker="*", color="k", ms=12, ls="none", label="teacher (100 %)")
        ax.axhline(95, color="k", ls=":", lw=1, label="95 % of the teacher")
        ax.set(title=f"{p} pruning", xlabel="achieved compression (LM parameters removed)")
        ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        ax.grid(True, alpha=0.4)
    axes[0][0].set_ylabel("AVG % of the teacher")
    handles, labels = _legend(axes.flat, [recipe_label(r) for r in styles])
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, title="recipe")
    fig.tight_layout()
    return fig


def radar_figure(rel):
    """Per-benchmark % of the teacher (`claims.relative_by_benchmark(...)` rows) as radar plots, as the
    study's Figure 1: one row per paradigm, one panel per requested ratio, one line per recipe, the teacher as the
    dashed 100 % ring. Legend outside. Returns the figure (None without rows or with fewer than 3 benchmarks)."""
    import matplotlib.pyplot as plt
    import numpy as np

    if rel is None or not len(rel):
        return None
    rel = rel.assign(ratio=rel["ratio"].round(2))
    benchmarks = sorted(rel["benchmark"].unique())
    if len(benchmarks) < 3:
        return None
    paradigms, ratios = sorted(rel["paradigm"].unique()), sorted(rel["ratio"].unique())
    styles = _recipe_styles(rel["recipe"].unique())
    angles = np.linspace(0, 2 * np.pi, len(benchmarks), endpoint=False)
    top = max(110.0, 10 * math.ceil(float(rel["relative"].max()) / 10) + 5)
    fig, axes = plt.subplots(len(paradigms), len(ratios), subplot_kw={"projection": "polar"},
                             figsize=(3.1 * len(ratios) + 2.6, 3.3 * len(paradigms)), squeeze=False)
    ring = np.append(angles, angles[0])
    for i, p in enumerate(paradigms):
        for j, r in enumerate(ratios):
            ax = axes[i][j]
            sub = rel[(rel["paradigm"] == p) & (rel["ratio"] == r)]
            ax.plot(ring, [100] * len(ring), color="k", ls="--", lw=1.2, label="teacher (100 %)")
            for recipe, st in styles.items():
                g = sub[sub["recipe"] == recipe].groupby("benchmark")["relative"].max().reindex(benchmarks)
                if g.notna().any():
                    vals = g.fillna(0).to_numpy()
                    ax.plot(ring, np.append(vals, vals[0]), label=recipe_label(recipe), lw=1.6, ms=4,
                            color=st["color"], marker=st["marker"], ls=st["ls"])
            ax.set_xticks(angles)
            ax.set_xticklabels(benchmarks, fontsize=9)
            ax.tick_params(axis="x", pad=2)
            ax.set_ylim(0, top)
            ax.set_yticks([25, 50, 75, 100])
            ax.set_yticklabels(["25", "50", "75", "100 %"], fontsize=7, color="0.4")
            ax.set_title(f"{p}, {_pct(r)}", fontsize=11, pad=16)
    handles, labels = _legend(axes.flat, [recipe_label(r) for r in styles])
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False,
               title="% of the teacher per benchmark")
    fig.tight_layout()
    return fig


def save_figure(fig, path: str | Path, dpi: int = 130) -> Path | None:
    """Write `fig` as PNG (white background, tight, legend outside included) for the index; None for None."""
    if fig is None:
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight", facecolor="white")
    return path


def efficiency_summary(m: dict, metric: str = "prefill_ms"):
    """The headline of a 05_efficiency record: one row per model at the goal batch size for `metric`: paradigm,
    requested and achieved ratio, round_to, the measured median, the paired speedup with its quartiles
    (speedup_lo, speedup_hi), the ideal from LM FLOPs and the share of it reached."""
    import pandas as pd

    models, bs = m.get("models") or {}, m.get("goal_batch_size")
    rows = []
    for s in m.get("speedups", []):
        if s.get("metric") != metric or s.get("batch_size") != bs:
            continue
        info = models.get(s["model"], {})
        rows.append({"model": s["model"], "paradigm": info.get("paradigm", "teacher"),
                     "requested": info.get("requested_ratio", 0.0), "achieved": info.get("lm_ratio", 0.0),
                     "round_to": info.get("round_to"), "median": s.get("value"), "speedup": s.get("speedup"),
                     "speedup_lo": s.get("speedup_q1"), "speedup_hi": s.get("speedup_q3"),
                     "ideal": s.get("ideal"), "share_of_ideal": s.get("share_of_ideal")})
    return pd.DataFrame(rows, columns=["model", "paradigm", "requested", "achieved", "round_to", "median", "speedup",
                                       "speedup_lo", "speedup_hi", "ideal", "share_of_ideal"])


# ----------------------------------------------------------------------------------------------
# The index: the headline first (claims, figures, decision guide), then one titled entry per run

KEY_FIGURE = {"00_teacher": "Evaluation", "01_layerwise": "AVG % against", "02_widthwise": "AVG % against",
              "03_recovery": "Recovery", "04_data_efficiency": "growing shares", "05_efficiency": "Speedup against"}


def key_figure(nb, notebook: str) -> bytes | None:
    """The PNG that best shows a run: the first image after the heading named in KEY_FIGURE (else the first)."""
    want, heading, first, found = KEY_FIGURE.get(notebook), "", None, None
    for cell in nb.cells:
        if cell.cell_type == "markdown" and cell.source.lstrip().startswith("#"):
            heading = cell.source.splitlines()[0]
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            png = out.get("data", {}).get("image/png") if isinstance(out.get("data"), dict) else None
            if png:
                first = first or png
                if want and want in heading and found is None:
                    found = png
    png = found or first
    return base64.b64decode(png) if png else None


def _thumbnail(png: bytes, out: Path, width: int = 560) -> Path:
    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGB")
    if img.width > width:
        img = img.resize((width, round(img.height * width / img.width)), Image.LANCZOS)
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out, optimize=True)
    return out


INDEX_CSS = PAGE_CSS + """
body { margin: 0; color: #1d1d1f; line-height: 1.45; }
.page { padding: 1.2rem 1.6rem 3rem; }
h1 { font-size: 1.7rem; margin: 0.4rem 0 0.2rem; }
h2 { font-size: 1.25rem; margin: 1.8rem 0 0.4rem; border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; }
h3 { font-size: 1.05rem; margin: 1.2rem 0 0.3rem; }
.lede { color: #444; max-width: 60rem; margin: 0.2rem 0 0.8rem; }
.figures { display: grid; grid-template-columns: 1fr; gap: 1.2rem; max-width: 70rem; }
figure { margin: 0; } figure img { width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.85rem; color: #555; }
.runs { display: grid; grid-template-columns: repeat(auto-fill, minmax(17rem, 1fr)); gap: 0.8rem; }
.run { border: 1px solid #e1e1e1; border-radius: 0.4rem; padding: 0.5rem 0.6rem; background: #fff; }
.run img { width: 100%; height: auto; display: block; margin-bottom: 0.35rem; }
.run a.title { font-weight: 600; color: #1a5fb4; text-decoration: none; font-size: 0.92rem; }
.run .meta { color: #666; font-size: 0.78rem; margin-top: 0.2rem; word-break: break-all; }
.empty { color: #666; font-style: italic; }
table.decision td { min-width: 11rem; } table.decision tbody th { text-align: left; white-space: nowrap; }
footer { margin-top: 2.5rem; color: #666; font-size: 0.8rem; }
@media print { .runs { grid-template-columns: repeat(3, 1fr); } .run { break-inside: avoid; } }
"""


def decision_matrix(guide) -> str:
    """The decision guide (`claims.decision_guide(...)` rows) as one table: compression bands down, training
    budgets across, each cell the best measured choice and its AVG %, coloured by the advice, and the choice
    it is tied with when their paired interval includes 0."""
    import pandas as pd

    guide = pd.DataFrame(guide)
    budgets = [b for b, _ in BUDGETS if b in set(guide["budget"])]
    colour = {"prune and recover": "#d7f0dc", "prune; no recovery needed": "#d7f0dc", "acceptable loss?": "#fbeecb"}
    rows = []
    for band in [b for b, *_ in RATIO_BANDS if b in set(guide["compression"])]:
        cells = [f"<th>{html.escape(band)}</th>"]
        for budget in budgets:
            g = guide[(guide["compression"] == band) & (guide["budget"] == budget)]
            if not len(g):
                cells.append("<td>\u2013</td>")
                continue
            r = g.iloc[0]
            tie = str(r.get("tie with", ""))
            tie = "" if tie.startswith(("none:", "no other")) else f"<br><small>tied with {html.escape(tie)}</small>"
            cells.append(f'<td style="background:{colour.get(r["advice"], "#f8d9d6")}">{html.escape(str(r["paradigm"]))}, '
                         f'{html.escape(recipe_label(r["recipe"]))}: <b>{float(r["AVG %"]):.1f}</b>{tie}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    head = "".join(f"<th>{html.escape(b)}</th>" for b in budgets)
    return (f'<table class="study-table decision"><thead><tr><th>compression (rows), training budget (columns)</th>{head}</tr>'
            f"</thead><tbody>{''.join(rows)}</tbody></table>")


def _headline(reports: Path, summary: dict) -> str:
    import pandas as pd

    parts = []
    claims = pd.DataFrame(summary.get("claims") or [])
    parts.append("<h2>What was found: the study's claims, tested on this sweep</h2>")
    if len(claims):
        claims = claims[["claim", "held", "study", "this run"]]
        parts.append(table_html(claims, verdict="held", rename={"held": "verdict", "study": "the study (LLaVA-v1.5-7B)",
                                                                "this run": "this sweep"}))
        counts = claims["held"].value_counts()
        parts.append(f'<p class="table-note">{counts.get("yes", 0)} held, {counts.get("no", 0)} did not, '
                     f'{counts.get("undecided", 0)} undecided (the 95 % interval of the deciding quantity overlaps '
                     f'the margin), {counts.get("no evidence", 0)} without evidence in this sweep (a claim needs the '
                     'runs it names; each test is stated on <a href="summary.html">the summary</a>).</p>')
    else:
        parts.append('<p class="empty">No claims computed (the summary notebook did not run).</p>')
    figs = [("figures/retention.png", "Retention: AVG % of the teacher against the achieved compression, "
             "per paradigm and recipe (no recovery and recoveries)"),
            ("figures/radar.png", "Per benchmark at each ratio (the study's Figure 1): % of the teacher, "
             "the teacher as the dashed 100 % ring")]
    shown = [(f, c) for f, c in figs if (reports / f).exists()]
    if shown:
        parts.append('<div class="figures">' + "".join(
            f'<figure><a href="{f}"><img src="{f}" alt="{html.escape(c)}"></a><figcaption>{html.escape(c)}'
            "</figcaption></figure>" for f, c in shown) + "</div>")
    else:
        parts.append('<p class="empty">No figures: no AVG % was measured in this sweep (a teacher that scores 0 on '
                     "every benchmark, as in smoke runs, leaves AVG % undefined).</p>")
    guide = pd.DataFrame(summary.get("decision_guide") or [])
    frac = summary.get("fraction", 0.05)
    parts.append(f"<h2>Decision guide (computed from this sweep, recovery with {_pct(frac)} of the data)</h2>")
    if len(guide):
        parts.append(decision_matrix(guide))
        parts.append('<p class="table-note">Each cell: the paradigm and recipe that kept most of the teacher in this '
                     "band with that training budget, and its AVG %; red: under 80 %, not worth it (a smaller model); "
                     "amber: 80-90 %, an acceptable loss?; green: prune and recover.</p>")
    else:
        parts.append('<p class="empty">No measured AVG % at this data share: no advice can be computed.</p>')
    return "".join(parts)


def _write_index(reports: Path, runs: Path, entries: list[dict], summary: dict, seconds: float) -> Path:
    groups: dict[str, list[dict]] = {}
    for e in entries:
        groups.setdefault(e["notebook"], []).append(e)
    nav = " \u00b7 ".join(f'<a href="#{html.escape(nb)}">{html.escape(SECTIONS.get(nb, nb))}</a>' for nb in sorted(groups))
    teacher = next((e["record"] for e in entries if e["notebook"] == "00_teacher" and e["record"]), None)
    preset = (teacher or {}).get("metrics", {}).get("preset") if teacher else None
    lede = (f"{len(entries)} runs{' of the ' + html.escape(str(preset)) + ' teacher' if preset else ''}, each an "
            "executed notebook. <b>AVG %</b> is the mean over benchmarks of 100&nbsp;&middot;&nbsp;s<sub>b</sub>(model)"
            "&nbsp;/&nbsp;s<sub>b</sub>(teacher), the study's measure; the <b>compression ratio</b> is the share of "
            'language-model parameters removed. All tables and figures: <a href="summary.html">the summary</a>.')
    body = [f'<div class="page"><h1>Structural pruning and recovery of multimodal LLMs</h1><p class="lede">{lede}</p>',
            _headline(reports, summary),
            f'<h2>The runs</h2><p class="lede">Grouped by notebook: {nav}. Each title names the run by its '
            "parameters and gives its key number; the picture is its key figure.</p>"]
    for nb in sorted(groups):
        items = sorted(groups[nb], key=lambda e: e["title"])
        body.append(f'<h3 id="{html.escape(nb)}">{html.escape(SECTIONS.get(nb, nb))} ({len(items)})</h3><div class="runs">')
        for e in items:
            link = html.escape(e["href"]) if e["href"] else None
            img = (f'<a href="{link}"><img src="{html.escape(e["thumb"])}" alt="key figure of {html.escape(e["run_id"])}" '
                   'loading="lazy"></a>' if e["thumb"] and link else "")
            title = (f'<a class="title" href="{link}">{html.escape(e["title"])}</a>' if link
                     else f'<span class="title">{html.escape(e["title"])}</span>')
            secs = (e["record"] or {}).get("seconds")
            meta = html.escape(e["run_id"]) + (f" \u00b7 {secs:.0f} s" if isinstance(secs, (int, float)) else "")
            body.append(f'<div class="run">{img}{title}<div class="meta">{meta}</div></div>')
        body.append("</div>")
    # other studies rendered into sub-folders (e.g. `studylib sweep configs/gemma.yaml --out reports/gemma`)
    others = sorted(p.parent for p in reports.glob("*/index.html"))
    if others:
        body.append("<h2>Other studies</h2><ul>" + "".join(
            f'<li>Another study: <a href="{html.escape(o.name)}/index.html">{html.escape(o.name)}</a> '
            f'(<a href="{html.escape(o.name)}/summary.html">summary</a>)</li>' for o in others) + "</ul>")
    body.append(f"<footer>Rendered {time.strftime('%Y-%m-%d %H:%M')} from {len(entries)} run records in "
                f"{html.escape(runs.name)}/ in {seconds:.0f} s. The pages work offline (MathJax is in mathjax/, "
                "figures are embedded or under figures/ and thumbs/): zip this folder to share it.</footer></div>")
    index = reports / "index.html"
    index.write_text(
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        "<title>Pruning and recovery of MLLMs: the study</title>"
        f"<style>{INDEX_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
    return index


def build_report(runs_dir: str | Path | None = None, reports_dir: str | Path | None = None) -> Path:
    """Execute the report notebook (99_report) on the run records, render it and every executed run
    notebook to offline HTML (code hidden; `render_html`), and write `index.html`: the headline first (the
    claims with their verdicts, the retention and radar figures, the decision guide), then one titled entry
    per run with its key figure, grouped by notebook."""
    t0 = time.time()
    reports = Path(reports_dir) if reports_dir else REPORTS
    runs = Path(runs_dir) if runs_dir else reports / "runs"
    for sub in ("pages", "figures", "thumbs", "tables"):
        (reports / sub).mkdir(parents=True, exist_ok=True)
    for stale in [*(reports / "figures").glob("*.png"), *(reports / "tables").glob("*.csv")]:
        stale.unlink()  # written again by the summary notebook when it has the data
    install_mathjax(reports)
    summary_nb = run_notebook("99_report", {"runs_dir": str(runs.resolve()), "reports_dir": str(reports.resolve()),
                                            "metrics_path": str((reports / "summary.json").resolve())},
                              out_dir=reports, out_name="summary")
    index = reports / "index.html"
    render_html(summary_nb, reports / "summary.html", reports, title="The study in one page", index=index)
    import nbformat

    records = {}
    for p in sorted(runs.glob("[!.]*.json")):
        try:
            rec = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(rec, dict) and rec.get("status", "ok") == "ok" and "notebook" in rec:
            records[p.stem] = rec
    notebooks = {nb.stem: nb for nb in sorted(runs.glob("[!.]*.ipynb"))}
    roots = [(str(reports.resolve()), reports.resolve().name)]
    entries = []
    for run_id in sorted(set(notebooks) | {r for r in records if r in notebooks or "metrics" in records[r]}):
        rec = records.get(run_id)
        entry = {"run_id": run_id, "record": rec, "notebook": (rec or {}).get("notebook", run_id.split("-")[0]),
                 "href": None, "thumb": None}
        title = run_title(rec) if rec else f"{SECTIONS.get(entry['notebook'], entry['notebook'])}: {run_id}"
        entry["title"] = scrub_paths(title, roots)  # parameters may name folders of this machine
        nb_path = notebooks.get(run_id)
        if nb_path is not None:
            page = reports / "pages" / f"{run_id}.html"
            thumb = reports / "thumbs" / f"{run_id}.png"
            fresh = page.exists() and page.stat().st_mtime >= nb_path.stat().st_mtime and _rendered_by_this_version(page)
            if not fresh or not thumb.exists():
                nb = nbformat.read(str(nb_path), as_version=4)
                png = key_figure(nb, entry["notebook"])
                if png:
                    _thumbnail(png, thumb)
                if not fresh:  # render new runs only
                    render_html(nb_path, page, reports, title=entry["title"], index=index)
            entry["href"] = f"pages/{page.name}"
            entry["thumb"] = f"thumbs/{thumb.name}" if thumb.exists() else None
        entries.append(entry)
    by_nb: dict[str, list[int]] = {}
    for i, e in enumerate(entries):
        by_nb.setdefault(e["notebook"], []).append(i)
    for idx in by_nb.values():
        titles = _distinguish([entries[i]["title"] for i in idx], [entries[i]["record"] or {} for i in idx])
        for i, t in zip(idx, titles):
            entries[i]["title"] = t
    summary_path = reports / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    return _write_index(reports, runs, entries, summary, time.time() - t0)
