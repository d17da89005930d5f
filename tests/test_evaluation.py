import pandas as pd
import pytest

from studylib import data as D
from studylib import evaluation as E


@pytest.mark.parametrize("text,expected", [("Two.", "2"), ("The red Circle!", "red circle"), (" yes ", "yes")])
def test_normalize(text, expected):
    assert E.normalize(text) == expected


def test_parsers():
    assert [E.parse_letter(t) for t in ["B", "B.", "(C) circle", "the answer is D", "none"]] == ["B", "B", "C", "D", ""]
    assert [E.parse_yes_no(t) for t in ["Yes.", "no, there is not", "maybe"]] == ["yes", "no", ""]
    assert [E.parse_yes_no(t) for t in ["red circle, yes", "Cross, yes.", "green"]] == ["yes", "yes", ""]
    assert E.parse_digits("4 7") == "47" and E.parse_digits("seven") == "7"
    assert E.is_correct("count", "three", "3") and not E.is_correct("count", "4", "3")
    assert E.is_correct("ocr", "1 4 5", "145") and E.is_correct("mcq", "A.", "A")


def test_pope_metrics_known_values():
    ds = {"answer": ["yes", "yes", "no", "no"], "category": ["random", "popular", "adversarial", "random"]}
    m = E.score_benchmark("pope", ["yes", "no", "yes", "no"], ds)
    # tp=1, fp=1, fn=1 -> F1 = 2/4; accuracy 2/4; yes-ratio 2/4
    assert m["accuracy"] == 0.5 and m["f1"] == 0.5 and m["yes_ratio"] == 0.5
    assert m["accuracy_random"] == 1.0 and m["accuracy_popular"] == 0.0 and m["accuracy_adversarial"] == 0.0


def test_relative_scores_and_avg_percent():
    ref = pd.DataFrame([{"benchmark": "count", "metric": "accuracy", "score": 0.8, "model": "t"},
                        {"benchmark": "ocr", "metric": "accuracy", "score": 0.5, "model": "t"}])
    tab = pd.DataFrame([{"benchmark": "count", "metric": "accuracy", "score": 0.4, "model": "s"},
                        {"benchmark": "ocr", "metric": "accuracy", "score": 0.5, "model": "s"}])
    rel = E.relative_scores(tab, ref)
    assert rel.set_index("benchmark")["relative"].to_dict() == {"count": 50.0, "ocr": 100.0}
    assert E.avg_percent(tab, ref) == 75.0
    with pytest.raises(ValueError, match="no positive score"):
        E.relative_scores(tab, ref.iloc[:1])


def test_unknown_benchmark_lists_valid_names():
    with pytest.raises(ValueError, match="valid benchmarks are: scene-qa, pope, count, mcq, ocr, digits, text-only"):
        E.load_benchmarks(["scene-qa", "vqav2"])


def test_evaluate_tiny_teacher_end_to_end(tiny_teacher, cache_dir):
    from studylib import models as M

    model, proc = M.load(tiny_teacher)
    benches = E.load_benchmarks(n=12, cache_dir=cache_dir)
    table = E.evaluate(model, proc, benches, model_name="tiny", batch_size=5, progress=False)
    assert set(table["benchmark"]) == set(D.BENCHMARKS)
    assert {"model", "benchmark", "metric", "score", "n", "chance"} <= set(table.columns)
    assert table["score"].between(0, 1).all() and (table["n"] == 12).all()
    # batching does not change greedy answers
    ds = benches["scene-qa"]
    assert E.generate_answers(model, proc, ds, 5, progress=False) == E.generate_answers(model, proc, ds, 12, progress=False)
    blank = E.evaluate(model, proc, {"count": benches["count"]}, blank_images=True, progress=False)
    assert set(blank["benchmark"]) == {"count"}
