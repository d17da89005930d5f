"""Report pages a reader can publish: offline (local MathJax, no CDN), clean (no stderr, warning, traceback or
absolute path), links and images that resolve, tables for reading, and an index that names every run.

The report is built from run records shaped like the smoke sweep's (one or more per study notebook, with
measured-looking numbers, so that the figures and tables are drawn), each with a small executed notebook
carrying what a real one carries: a progress-bar warning on stderr, this machine's paths, a figure, a table.
The same page checks run on the real smoke sweep's report in tests/test_sweep.py (test_smoke_config_end_to_end).
"""

import base64
import html
import io
import json
import re
from pathlib import Path

import nbformat as nbf
import pandas as pd
import pytest

from studylib import report as R

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ["scene-qa", "pope", "count", "mcq", "ocr", "digits"]


def _png(color=(40, 90, 160)) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (120, 60), color).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _relative(avg):
    return {b: round(avg + d, 1) for b, d in zip(BENCHMARKS, (-3, 2, -1, 4, -6, 4))}


def fake_records(tmp: Path) -> list[dict]:
    """One record per kind of run of the study, with the keys the real notebooks write."""
    ckpt = str(tmp / "ckpt")
    recs = [{"run_id": "00_teacher-aaaa", "notebook": "00_teacher", "seconds": 812.0,
             "parameters": {"preset": "llava-small", "n_train": 20000, "checkpoint_root": ckpt},
             "metrics": {"preset": "llava-small", "seed": 0, "teacher_dir": f"{ckpt}/teacher",
                         "scores": dict(zip(BENCHMARKS, (0.92, 0.81, 0.77, 0.66, 0.58, 0.71)), image_mean=0.74,
                                        **{"text-only": 0.5}),
                         "blank_image_scores": dict(zip(BENCHMARKS, (0.5, 0.5, 0.3, 0.3, 0.0, 0.1)), image_mean=0.28),
                         "chance": dict(zip(BENCHMARKS, (0.5, 0.5, 0.25, 0.25, 0.01, 0.1)), **{"text-only": 0.3})}}]
    for nb, paradigm, crit, crits, avgs in (("01_layerwise", "layerwise", "bi", ["bi", "random"], (80.2, 61.0, 40.3)),
                                            ("02_widthwise", "widthwise", "taylor", ["taylor", "l1"], (93.1, 79.4, 58.8))):
        per = [{"requested_ratio": r, "lm_ratio": r + (0.03 if paradigm == "layerwise" else 0.0),
                "avg_percent": a, "relative": _relative(a)} for r, a in zip((0.15, 0.30, 0.45), avgs)]
        m = {"criterion": crit, "per_ratio": per, "teacher_dir": f"{ckpt}/teacher"}
        if nb == "01_layerwise":
            m["importance"] = {"bi": [0.9, 0.3, 0.2, 0.25, 0.4, 0.8], "random": [0.5, 0.1, 0.7, 0.2, 0.9, 0.3]}
        recs.append({"run_id": f"{nb}-bbbb", "notebook": nb, "seconds": 95.0, "metrics": m,
                     "parameters": {"criteria": crits, "ratios": [0.15, 0.30, 0.45], "checkpoint_root": ckpt}})
    for paradigm, crit, ratio, train, loss, avg in (("layerwise", "bi", 0.15, "projector", "ce", 90.5),
                                                    ("layerwise", "bi", 0.15, "lora", "ce+hidden", 97.4),
                                                    ("widthwise", "taylor", 0.30, "lora", "ce+hidden", 92.5),
                                                    ("widthwise", "taylor", 0.30, "full", "ce", 91.0)):
        recs.append({"run_id": f"03_recovery-{paradigm}_{crit}_{train}_{loss}-cccc", "notebook": "03_recovery",
                     "seconds": 300.0,
                     "parameters": {"paradigm": paradigm, "criterion": crit, "ratio": ratio, "train": train,
                                    "loss": loss, "data_fraction": 0.05, "checkpoint_root": ckpt},
                     "metrics": {"paradigm": paradigm, "criterion": crit, "ratio": ratio, "lm_ratio": ratio + 0.01,
                                 "recipe": {"train": train, "loss": loss}, "data_fraction": 0.05,
                                 "avg_percent_recovered": avg, "relative_recovered": _relative(avg),
                                 "recovery": {"examples": 1000, "of_examples": 20000},
                                 "checkpoint": f"{ckpt}/recovered/x"}})
    recs.append({"run_id": "04_data_efficiency-dddd", "notebook": "04_data_efficiency", "seconds": 600.0,
                 "parameters": {"paradigm": "widthwise", "criterion": "l2", "ratio": 0.3, "train": "projector",
                                "loss": "ce", "fractions": [0.01, 0.05, 0.1]},
                 "metrics": {"paradigm": "widthwise", "criterion": "l2", "ratio": 0.3, "lm_ratio": 0.3,
                             "recipe": {"train": "projector", "loss": "ce"},
                             "curve": [{"fraction": f, "AVG %": a} for f, a in ((0.01, 81.0), (0.05, 86.2), (0.1, 87.0))]}})
    models = {"teacher": None, **{f"{p} {r:.0%}": {"paradigm": p, "requested_ratio": r, "round_to": 1, "lm_ratio": r}
                                  for p in ("layerwise", "widthwise") for r in (0.15, 0.30, 0.45)}}
    speed = []
    for name, info in models.items():
        for bs in (1, 8, 32):
            for metric in ("prefill_ms", "decode_tokens_per_s"):
                r = info["requested_ratio"] if info else 0.0
                s = 1 / (1 - 0.8 * r)
                speed.append({"model": name, "batch_size": bs, "metric": metric, "value": 120.0 / s, "speedup": s,
                              "speedup_q1": s - 0.02, "speedup_q3": s + 0.03, "ideal": 1 / (1 - r),
                              "share_of_ideal": 100 * s * (1 - r)})
    recs.append({"run_id": "05_efficiency-eeee", "notebook": "05_efficiency", "seconds": 400.0,
                 "parameters": {"ratios": [0.15, 0.3, 0.45]},
                 "metrics": {"device": "cpu", "goal_batch_size": 8, "speedups": speed,
                             "models": {k: v for k, v in models.items() if v}}})
    for r in recs:
        r["status"] = "ok"
    return recs


def write_runs(tmp: Path) -> tuple[Path, list[dict]]:
    """A runs folder: each record as `<run-id>.json` and an executed notebook `<run-id>.ipynb` with the outputs
    a reader must not see (stderr, absolute paths, a RangeIndex) and those they must (math, a figure, a table)."""
    runs = tmp / "runs"
    runs.mkdir()
    recs = fake_records(tmp)
    table = pd.DataFrame({"benchmark": BENCHMARKS[:3], "score": [0.91234, 0.8, 0.7]}).to_html()
    for rec in recs:
        (runs / f"{rec['run_id']}.json").write_text(json.dumps(rec))
        key = R.KEY_FIGURE.get(rec["notebook"], "Results")
        cell = nbf.v4.new_code_cell("print('x')")
        cell.outputs = [
            nbf.v4.new_output("stream", name="stderr", text=f"{ROOT}/.venv/lib/python3.11/site-packages/tqdm/auto.py:21: "
                                                              "TqdmWarning: IProgress not found.\n"),
            nbf.v4.new_output("stream", name="stdout", text=f"teacher at {tmp}/ckpt/teacher-x (6 s)\n"
                                                              f"metrics written to {runs}/.{rec['run_id']}.json\n"),
            nbf.v4.new_output("display_data", data={"image/png": _png(), "text/plain": "<Figure>"}),
            nbf.v4.new_output("execute_result", data={"text/html": table, "text/plain": "table"}, execution_count=1),
        ]
        nb = nbf.v4.new_notebook(cells=[
            nbf.v4.new_markdown_cell(f"# {rec['notebook']}\n\nAVG % is $\\frac{{1}}{{|B|}}\\sum_b 100\\,s_b/s_b(\\text{{teacher}})$."),
            nbf.v4.new_markdown_cell(f"## {key}"), cell],
            metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
        nbf.write(nb, runs / f"{rec['run_id']}.ipynb")
    return runs, recs


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    runs, recs = write_runs(tmp)
    reports = tmp / "reports"
    (reports / "gemma").mkdir(parents=True)  # another study rendered into a sub-folder is linked
    (reports / "gemma" / "index.html").write_text("<html></html>")
    (reports / "gemma" / "summary.html").write_text("<html></html>")
    index = R.build_report(runs, reports)
    return {"tmp": tmp, "reports": reports, "index": index, "records": recs}


def pages(reports: Path) -> list[Path]:
    return [reports / "index.html", reports / "summary.html", *sorted((reports / "pages").glob("*.html"))]


def visible(text: str) -> str:
    """What a reader can see: no scripts, styles or embedded image data."""
    text = re.sub(r"<(script|style)\b.*?</\1>", " ", text, flags=re.S | re.I)
    return re.sub(r"data:image/[\w+.-]+;base64,[A-Za-z0-9+/=]+", "", text)


ABSOLUTE = re.compile(r"(?<![\w.~:/\\\u2026-])/(?:[\w.@+-]+/)+[\w.@+-]*")


def check_links(reports: Path):
    """Every href and src of every page resolves to a file inside the report folder; nothing needs the network."""
    for page in pages(reports):
        text = page.read_text()
        refs = re.findall(r'(?:href|src)="([^"#]+)"', text)
        assert refs, page.name
        for ref in refs:
            if ref.startswith(("data:", "mailto:")):
                continue
            assert not ref.startswith(("http://", "https://", "//")), f"{page.name} needs the network: {ref}"
            target = (page.parent / html.unescape(ref).split("?")[0]).resolve()
            assert target.exists(), f"{page.name}: {ref} does not resolve"
            assert reports.resolve() in target.parents, f"{page.name}: {ref} leaves the report folder"


def check_math(reports: Path):
    """No CDN; a page with raw `$...$` left for the browser loads the local MathJax, which is there."""
    for page in pages(reports):
        text = page.read_text()
        assert "cdnjs" not in text and "cdn.jsdelivr" not in text and "require.min.js" not in text, page.name
        if re.search(r"\$[^$\n]+\$", visible(text)):
            src = re.findall(r'<script[^>]+src="([^"]*MathJax\.js)"', text)
            assert src, f"{page.name}: math without MathJax"
            assert (page.parent / src[0]).exists(), f"{page.name}: {src[0]} missing"
    assert (reports / "mathjax" / "config" / "TeX-AMS-MML_HTMLorMML-full.js").exists()
    assert list((reports / "mathjax" / "fonts").rglob("*.woff")), "the web fonts travel with the pages"


def check_clean(reports: Path, roots: set[str]):
    """No warning, traceback or stderr, and none of this machine's absolute paths, on any page."""
    for page in pages(reports):
        text = page.read_text()
        seen = visible(text)
        for word in ("Warning", "Traceback", "IProgress", "stderr"):
            assert word not in seen, f"{page.name} shows {word!r}"
        for root in roots:
            assert root not in text, f"{page.name} shows the absolute path {root}"
        assert not ABSOLUTE.findall(seen), f"{page.name}: {ABSOLUTE.findall(seen)[:3]}"


def test_every_link_and_image_resolves(report):
    assert len(pages(report["reports"])) == 2 + len(report["records"])
    assert 'href="gemma/index.html"' in report["index"].read_text()
    check_links(report["reports"])


def test_math_is_typeset_offline_by_a_local_mathjax(report):
    check_math(report["reports"])


def test_no_warning_traceback_stderr_or_absolute_path_on_any_page(report):
    check_clean(report["reports"], {str(report["tmp"]), str(ROOT), str(Path.home())})
    run_page = (report["reports"] / "pages" / "00_teacher-aaaa.html").read_text()
    assert "\u2026/ckpt/teacher-x" in run_page and "runs/.00_teacher-aaaa.json" in run_page, "paths shown short"
    assert "<th>0</th>" not in run_page, "a RangeIndex column is dropped from tables"


def test_the_index_answers_first_and_names_every_run(report):
    text = report["index"].read_text()
    head = text[: text.index("The runs")]
    assert "What was found" in head and "Decision guide" in head and "verdict-" in head
    assert 'src="figures/retention.png"' in head and 'src="figures/radar.png"' in head
    for name in (
        "Recovery: widthwise Taylor 30 %, LoRA, CE + hidden KD, 5 % of the data: AVG % 92.5",
        "Recovery: layerwise BI 15 %, projector, CE, 5 % of the data: AVG % 90.5",
        "Layerwise pruning: BI, random at 15 %, 30 %, 45 %, no recovery: AVG % 80.2 at 15 %, 61.0 at 30 %",
        "Widthwise pruning: Taylor, L1 at 15 %, 30 %, 45 %, no recovery",
        "Data efficiency: widthwise L2 30 %, projector, CE, 1 %, 5 %, 10 % of the data: AVG % 81.0 \u2192 86.2 \u2192 87.0",
        "The teacher: llava-small, 20,000 training conversations, seed 0",
        "Speed and memory: the teacher and 6 pruned models at 15 %, 30 %, 45 % on cpu: best prefill speedup",
    ):
        assert html.escape(name) in text, name
    for rec in report["records"]:
        assert f'href="pages/{rec["run_id"]}.html"' in text
        assert (report["reports"] / "thumbs" / f"{rec['run_id']}.png").exists(), "each run shows its key figure"
    sections = [m for m in re.findall(r'<h3 id="([^"]+)"', text)]
    assert sections == sorted({r["notebook"] for r in report["records"]}), "grouped by notebook, in order"


def test_summary_tables_are_for_reading(report):
    reports = report["reports"]
    text = (reports / "summary.html").read_text()
    assert "study-table" in text and "verdict-" in text
    assert "rows x" not in text and "rows \u00d7 17 columns" not in text, "no pandas dump of a long table"
    assert 'href="tables/efficiency.csv"' in text and 'href="tables/retention.csv"' in text
    eff = pd.read_csv(reports / "tables" / "efficiency.csv")
    assert len(eff) == 7 * 3 * 2 and "share_of_ideal" in eff, "the CSV holds every model, batch size and metric"
    assert "1.14 [1.12, 1.17]" in text, "the speedup is shown with its interquartile range"
    assert "prefill (ms)" in text and "speedup (\u00d7)" in text, "units in headers"
    summary = json.loads((reports / "summary.json").read_text())
    assert summary["runs"] == len(report["records"]) and len(summary["claims"]) == 6
    assert summary["figures"] == ["radar.png", "retention.png"]


def test_reader_frame_rounds_and_shows_intervals():
    df = pd.DataFrame({"name": ["a", "b", None], "AVG": [92.4871, 80.0, float("nan")], "AVG_ci": [1.12, None, 2.0],
                       "ratio": [0.3, 0.15, 0.45], "n": [3, 10, 1000],
                       "s": [1.5, 2.0, 1.2], "s_lo": [1.4, 1.9, 1.0], "s_hi": [1.6, 2.2, 1.3]})
    frame, numeric = R.reader_frame(df, units={"AVG": "%", "s": "\u00d7"}, percent=["ratio"], digits={"AVG": 1})
    assert list(frame.columns) == ["name", "AVG (%)", "ratio", "n", "s (\u00d7)"]
    assert frame["AVG (%)"].tolist() == ["92.5 \u00b1 1.1", "80.0", "\u2013"]
    assert frame["ratio"].tolist() == ["30 %", "15 %", "45 %"] and frame["n"].tolist() == ["3", "10", "1,000"]
    assert frame["s (\u00d7)"].tolist()[:2] == ["1.50 \u00b1 0.10", "2.00 [1.90, 2.20]"]
    assert frame["name"].tolist() == ["a", "b", "\u2013"] and "name" not in numeric
    sty = R.table_html(pd.DataFrame({"claim": ["1. <x>"], "held": ["yes"]}), verdict="held")
    assert "&lt;x&gt;" in sty and 'class="verdict verdict-yes"' in sty and "<th>0</th>" not in sty


def test_scrub_paths_and_range_index():
    reports = "/some/where/reports"
    text = (f"in {reports}/runs/x.json, {ROOT}/data/checkpoints/t, ~ok, a/b/c, https://x.org/a/b, "
            "/tmp/pytest-of-me/pytest-1/test0/ckpt/teacher")
    out = R.scrub_paths(text, [(reports, "reports")])
    assert "reports/runs/x.json" in out and " data/checkpoints/t" in out and "https://x.org/a/b" in out
    assert "a/b/c" in out and "\u2026/ckpt/teacher" in out and "/tmp/" not in out and "/some/" not in out
    t = pd.DataFrame({"a": [1, 2]}).to_html()
    assert "<th>0</th>" in t and "<th>0</th>" not in R.drop_range_index(t)
    named = pd.DataFrame({"a": [1, 2]}, index=["x", "y"]).to_html()
    assert R.drop_range_index(named) == named
