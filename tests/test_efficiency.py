"""Tests of studylib.efficiency on tiny models: FLOP and parameter counting, the interleaved measurement and its
tidy table, speedup arithmetic, the CUDA guards (without a GPU), and `studylib bench` with its input checks.

No timing assertions beyond "finite and > 0": machines are noisy.
"""

import argparse
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from studylib import collate
from studylib import efficiency as F
from studylib import models as M
from studylib import pruning as P

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

# llava-tiny's decoder (studylib.models.PRESETS): Llama, hidden 64, 4 blocks, 4 heads of 16, MLP 128
HIDDEN, LAYERS, HEADS, HEAD_DIM, MLP = 64, 4, 4, 16, 128


@pytest.fixture(scope="module")
def tiny(tiny_processor):
    """The unpruned llava-tiny model and a layerwise and a widthwise pruned copy (data-free criteria)."""
    model = M.build_model("llava-tiny", tiny_processor).eval()
    layer = P.prune(model, "layerwise", "deepest", 0.30, None)
    width = P.prune(model, "widthwise", "l2", 0.15, None)
    return {"base": model, "layer": layer.model, "width": width.model, "plans": (layer.plan, width.plan)}


def vocab(model) -> int:
    return model.config.text_config.vocab_size


def test_flops_per_token_by_hand(tiny):
    model = tiny["base"]
    block = 4 * HIDDEN * HIDDEN + 3 * HIDDEN * MLP + 2 * HIDDEN  # q, k, v, o; gate, up, down; two RMSNorms
    non_embedding = LAYERS * block + HIDDEN + vocab(model) * HIDDEN  # + final norm + lm_head (not tied)
    for context in (0, 1, 37):
        assert F.flops_per_token(model, context) == 2 * non_embedding + 4 * LAYERS * HEADS * HEAD_DIM * context
    lm_params, _ = P.count_params(model)
    assert non_embedding == lm_params - vocab(model) * HIDDEN  # the input embedding table is all that is left out

    # pruned: per-block widths read from the model
    width = tiny["width"]
    blocks = P.describe_lm(width).blocks
    by_hand = 2 * (sum(4 * HIDDEN * b.num_heads * b.head_dim + 3 * HIDDEN * b.intermediate_size + 2 * HIDDEN
                       for b in blocks) + HIDDEN + vocab(width) * HIDDEN)
    by_hand += sum(4 * b.num_heads * b.head_dim * 10 for b in blocks)
    assert F.flops_per_token(width, 10) == by_hand
    with pytest.raises(ValueError, match="context must be an int of at least 0"):
        F.flops_per_token(model, -1)


def test_counted_flops_match_the_formula(tiny, tiny_processor):
    """torch's FLOP counter on a real prefill agrees with the hand formula: 2 FLOPs per weight per token in the
    blocks' linear layers, attention 4 * h * d * T per token over the full T x T score matrix (the CPU attention
    kernel is counted too), the LM head on the last position only (logits_to_keep=1)."""
    model = tiny["base"]
    T = 9
    ids = torch.randint(5, 400, (1, T))
    counts = F.counted_flops(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    linear = 4 * HIDDEN * HIDDEN + 3 * HIDDEN * MLP
    assert counts["decoder blocks"] == LAYERS * (2 * linear * T + 4 * HEADS * HEAD_DIM * T * T)
    assert counts["lm_head"] == 2 * HIDDEN * vocab(model)
    assert counts["lm"] == counts["decoder blocks"] + counts["lm_head"]
    assert counts.get("vision tower", 0) == 0 and counts["total"] == counts["lm"]  # text only

    inputs = F.benchmark_inputs(tiny_processor, 2)
    with_image = F.counted_flops(model, inputs)
    assert with_image["vision tower"] > 0 and with_image["projector"] > 0
    assert with_image["total"] == sum(v for k, v in with_image.items() if k not in ("total", "lm"))


def test_pruned_models_report_fewer_flops_params_and_bytes(tiny, tiny_processor):
    base = tiny["base"]
    inputs = F.benchmark_inputs(tiny_processor, 2)
    base_counts = F.counted_flops(base, inputs)
    for name in ("layer", "width"):
        pruned = tiny[name]
        assert F.flops_per_token(pruned, 30) < F.flops_per_token(base, 30)
        assert P.count_params(pruned)[0] < P.count_params(base)[0]
        assert P.count_params(pruned)[1] < P.count_params(base)[1]
        assert F.weight_bytes(pruned) < F.weight_bytes(base)
        counts = F.counted_flops(pruned, inputs)
        assert counts["lm"] < base_counts["lm"] and counts["total"] < base_counts["total"]
        assert counts["vision tower"] == base_counts["vision tower"], "pruning never touches the vision tower"
    buffers = sum(b.numel() * b.element_size() for b in base.buffers())  # e.g. int64 position ids
    assert F.weight_bytes(base) == 4 * P.count_params(base)[1] + buffers  # fp32 parameters


def test_closest_widths_when_round_to_cannot_meet_the_ratio(tiny):
    model = tiny["base"]
    scores = P.compute_scores(model, "widthwise", "l2", [])
    widths = F.closest_widths(model, scores, 0.15, 64)
    assert widths is not None and widths[2] % 64 == 0
    achieved = P.make_plan(model, scores, None, widths=widths).lm_ratio
    for q in range(1, HEADS + 1):  # no other multiple of 64 comes closer
        for m in (64, 128):
            assert abs(P.make_plan(model, scores, None, widths=(q, q, m)).lm_ratio - 0.15) >= abs(achieved - 0.15)
    exact = F.closest_widths(model, scores, 0.15, 1)
    assert abs(P.make_plan(model, scores, None, widths=exact).lm_ratio - 0.15) <= abs(achieved - 0.15)


def test_run_order_rotates_by_one_per_repeat():
    assert F.run_order(["a", "b", "c"], 4) == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]]
    orders = F.run_order(list("abcd"), 8)
    for name in "abcd":  # every model in every position equally often
        assert sorted(o.index(name) for o in orders) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert F.run_order(["only"], 2) == [["only"], ["only"]]


def test_measure_interleaves_and_derives_metrics(tiny, tiny_processor, monkeypatch):
    """With run_once replaced by a recorder that returns fixed times: the order of the runs (warm-up, then
    every batch size runs every model, rotated per repeat, then the memory pass) and the derived metrics."""
    calls = []
    names = {id(tiny[k]): k for k in ("base", "layer", "width")}

    def fake_run(model, inputs, new_tokens, device):
        calls.append((names[id(model)], len(inputs["input_ids"])))
        return 0.010, 0.020

    monkeypatch.setattr(F, "run_once", fake_run)
    models = {k: tiny[k] for k in ("base", "layer", "width")}
    table = F.measure(models, tiny_processor, [1, 2], 4, "cpu", repeats=3, warmup=1, count_flops=False)
    expected = []
    for order in F.run_order(list(models), 1) + F.run_order(list(models), 3):
        for bs in (1, 2):
            expected += [(name, bs) for name in order]
    expected += [(name, bs) for bs in (1, 2) for name in models]  # memory: one run each
    assert calls == expected

    def med(model, metric, bs):
        return F.value(table, model, metric, bs)

    tokens = F.value(table, "layer", "prompt_tokens", 2)
    assert med("layer", "prefill_ms", 2) == pytest.approx(10.0)
    assert med("layer", "decode_ms_per_step", 2) == pytest.approx(20.0 / 4)
    assert med("layer", "decode_tokens_per_s", 2) == pytest.approx(2 * 4 / 0.020)
    assert med("layer", "generate_tokens_per_s", 2) == pytest.approx(2 * 4 / 0.030)
    assert med("layer", "prefill_tokens_per_s", 2) == pytest.approx(2 * tokens / 0.010)
    timed = table[table["metric"] == "prefill_ms"]
    assert (timed["n"] == 3).all() and (timed["q1"] == timed["q3"]).all()


def test_measure_table_on_tiny_models(tiny, tiny_processor):
    models = {k: tiny[k] for k in ("base", "layer", "width")}
    table = F.measure(models, tiny_processor, [1, 2], new_tokens=2, device="cpu", repeats=2, warmup=1)
    assert list(table.columns) == F.COLUMNS
    per_batch = set(F.METRICS) - {"lm_params", "total_params", "weight_mb"}
    for name in models:
        rows = table[table["model"] == name]
        assert set(rows["metric"]) == set(F.METRICS)
        assert len(rows) == 3 + 2 * len(per_batch)  # three per-model rows, the others per batch size
        assert rows[rows["metric"].isin(["lm_params", "total_params", "weight_mb"])]["batch_size"].isna().all()
        for metric in per_batch:
            assert sorted(rows[rows["metric"] == metric]["batch_size"]) == [1, 2]
        for metric in ("prefill_ms", "decode_tokens_per_s", "generate_tokens_per_s"):
            assert (rows[rows["metric"] == metric]["n"] == 2).all()
    values = table[["median", "q1", "q3", "min", "max"]].to_numpy(dtype=float)
    assert ((values > 0) & (values < math.inf)).all()
    assert (table["min"] <= table["q1"]).all() and (table["q1"] <= table["median"]).all()
    assert (table["median"] <= table["q3"]).all() and (table["q3"] <= table["max"]).all()
    assert F.value(table, "layer", "lm_params") == P.count_params(tiny["layer"])[0]
    assert F.value(table, "base", "peak_memory_mb", 2) == pytest.approx(
        F.value(table, "base", "weight_mb") + F.value(table, "base", "activation_mb", 2))
    records = F.to_records(table)
    json.dumps(records)  # JSON-able: <NA> batch sizes become null
    assert any(r["batch_size"] is None for r in records)
    speed = F.speedups(table, "base")
    assert ((speed["speedup"] > 0) & (speed["speedup"] < math.inf)).all()
    assert (speed[speed["model"] != "base"]["ideal"] > 1).all()


def fixed_table() -> pd.DataFrame:
    """A hand-made measure() table: base and one pruned model at batch size 8."""
    def row(model, metric, bs, median):
        return {"model": model, "metric": metric, "batch_size": bs, "unit": F.METRICS[metric][0], "median": median,
                "q1": median, "q3": median, "min": median, "max": median, "n": 1}

    rows = []
    for model, (ms, tps, gen, flops, params, gflop) in {"base": (100.0, 10.0, 8.0, 1000, 500, 4.0),
                                                        "pruned": (50.0, 15.0, 12.0, 400, 250, 2.5)}.items():
        rows += [row(model, "prefill_ms", 8, ms), row(model, "decode_tokens_per_s", 8, tps),
                 row(model, "generate_tokens_per_s", 8, gen), row(model, "lm_flops_per_token", 8, flops),
                 row(model, "prefill_gflop", 8, gflop), row(model, "lm_params", pd.NA, params)]
    table = pd.DataFrame(rows, columns=F.COLUMNS)
    table["batch_size"] = table["batch_size"].astype("Int64")
    return table


def test_speedup_arithmetic_on_a_fixed_table():
    speed = F.speedups(fixed_table(), "base").set_index(["model", "metric"])
    p = speed.loc["pruned", "prefill_ms"]
    assert p["speedup"] == pytest.approx(2.0)  # 100 ms -> 50 ms
    assert p["ideal"] == pytest.approx(2.5)  # 1000 / 400 FLOPs per token
    assert p["ideal_params"] == pytest.approx(2.0)  # 500 / 250 LM parameters
    assert p["ideal_model"] == pytest.approx(1.6)  # 4.0 / 2.5 GFLOP of the whole prefill
    assert p["share_of_ideal"] == pytest.approx(80.0)  # 100 * 2 / 2.5
    assert p["reduction"] == pytest.approx(50.0) and p["ideal_reduction"] == pytest.approx(60.0)
    assert p["share_of_ideal_reduction"] == pytest.approx(100 * 50 / 60)
    assert p["share_of_ideal_model"] == pytest.approx(125.0)
    d = speed.loc["pruned", "decode_tokens_per_s"]
    assert d["speedup"] == pytest.approx(1.5) and d["share_of_ideal"] == pytest.approx(60.0)  # a rate: 15 / 10
    assert math.isnan(d["ideal_model"])
    b = speed.loc["base", "prefill_ms"]
    assert b["speedup"] == 1.0 and b["share_of_ideal"] == 100.0 and math.isnan(b["share_of_ideal_reduction"])
    with pytest.raises(ValueError, match=r"baseline must be one of the table's models \['base', 'pruned'\]"):
        F.speedups(fixed_table(), "teacher")

    summary = F.summary(fixed_table(), F.speedups(fixed_table(), "base"), 8)
    assert list(summary["model"]) == ["base", "pruned"]
    assert summary.set_index("model").loc["pruned", "share of ideal %"] == pytest.approx(80.0)
    md = F.markdown(summary)
    assert md.count("\n") == 3 and md.startswith("| model | LM params |") and "| pruned | 250 |" in md


def test_paired_speedups_use_per_repeat_ratios():
    """Repeat 1 ran while the machine was slow for both models: the per-repeat ratios are 2, 2, 1.33, while the
    ratio of the medians (100 / 60) is pulled by the unpaired slow run."""
    runs = pd.DataFrame([{"model": m, "batch_size": 8, "repeat": r, "position": 0, "prefill_ms": t}
                         for m, ts in {"base": [100.0, 200.0, 80.0], "pruned": [50.0, 100.0, 60.0]}.items()
                         for r, t in enumerate(ts)])
    table = fixed_table()
    table.loc[(table["model"] == "base") & (table["metric"] == "prefill_ms"), "median"] = 100.0
    table.loc[(table["model"] == "pruned") & (table["metric"] == "prefill_ms"), "median"] = 60.0
    unpaired = F.speedups(table, "base").set_index(["model", "metric"]).loc[("pruned", "prefill_ms")]
    paired = F.speedups(table, "base", runs).set_index(["model", "metric"]).loc[("pruned", "prefill_ms")]
    assert unpaired["speedup"] == pytest.approx(100 / 60) and math.isnan(unpaired["speedup_q1"])
    assert paired["speedup"] == pytest.approx(2.0)
    assert paired["speedup_q1"] == pytest.approx(np.percentile([2, 2, 80 / 60], 25)) and paired["speedup_q3"] == 2.0
    assert paired["share_of_ideal"] == pytest.approx(80.0)
    # metrics the runs lack (decode here) fall back to the ratio of medians
    decode = F.speedups(table, "base", runs).set_index(["model", "metric"]).loc[("pruned", "decode_tokens_per_s")]
    assert decode["speedup"] == pytest.approx(1.5)


def test_measure_runs_records_every_timed_run(tiny, tiny_processor):
    models = {k: tiny[k] for k in ("base", "layer")}
    table, runs = F.measure_runs(models, tiny_processor, [1], new_tokens=1, device="cpu", repeats=3, warmup=0,
                                 count_flops=False, memory=False)
    assert len(runs) == 2 * 3 and set(runs["repeat"]) == {0, 1, 2}
    order = list(runs.sort_values(["repeat", "position"])["model"])
    assert order == ["base", "layer", "layer", "base", "base", "layer"]
    for name in models:
        median = runs[runs["model"] == name]["prefill_ms"].median()
        assert F.value(table, name, "prefill_ms", 1) == pytest.approx(median)
    speed = F.speedups(table, "base", runs)
    assert speed["speedup_q1"].notna().all() and (speed["speedup_q1"] <= speed["speedup_q3"]).all()


def test_cuda_guards_without_a_gpu(tiny, monkeypatch):
    """The CUDA path synchronises around every timed region and reads the CUDA memory statistics; checked here
    with torch.cuda's functions replaced by recorders (this machine has no GPU)."""
    log = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: log.append(("sync", str(device))))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: log.append(("reset", str(device))))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 1000)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 1000 + 5 * 2**20)
    cuda = torch.device("cuda")

    F._sync(torch.device("cpu"))
    assert log == []
    F._sync(cuda)
    assert log == [("sync", "cuda")]

    log.clear()
    ids = torch.randint(5, 400, (1, 6))
    prefill, decode = F.run_once(tiny["base"], {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, 2, cuda)
    assert log == [("sync", "cuda")] * 3  # before the prefill, between prefill and decode, after the decode
    assert prefill > 0 and decode > 0

    log.clear()
    with F.PeakMemory(cuda) as mem:
        pass
    assert mem.peak == 5 * 2**20 and mem.method.startswith("cuda: max_memory_allocated")
    assert log == [("sync", "cuda"), ("reset", "cuda"), ("sync", "cuda")]
    assert F.memory_method("cuda").startswith("cuda:")

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(ValueError, match=r"device cuda is not available on this machine; available: cpu"):
        F.check_device("cuda")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert F.check_device("cuda") == cuda and F.check_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ValueError, match=r"cuda:3 is not available on this machine; available: cpu, cuda:0"):
        F.check_device("cuda:3")
    for bad in ("tpu", "gpu", "", None, "cpu:1"):
        with pytest.raises(ValueError, match="device must be cpu, cuda, cuda:N or mps"):
            F.check_device(bad)


def test_peak_memory_on_cpu_sees_an_allocation():
    with F.PeakMemory(torch.device("cpu")) as mem:
        block = torch.ones(16 * 2**20 // 4)  # 16 MiB, written so that its pages are resident
        assert block.sum() > 0
    assert mem.method.startswith("cpu:")
    assert mem.peak >= 15 * 2**20


def test_inputs_fit_the_model(tiny, tiny_processor):
    model = tiny["base"]
    bench = F.benchmark_inputs(tiny_processor, 3)
    assert bench["input_ids"].shape[0] == bench["pixel_values"].shape[0] == 3
    image_id = model.config.image_token_id
    assert ((bench["input_ids"] == image_id).sum(1) == collate.num_image_tokens(tiny_processor)).all()
    assert (bench["attention_mask"][:, -1] == 1).all(), "left padding, as generation uses"
    synthetic = F.synthetic_inputs(model, 2, text_tokens=5)
    assert ((synthetic["input_ids"] == image_id).sum(1) == collate.num_image_tokens(tiny_processor)).all()
    with torch.inference_mode():  # LLaVA checks that image features and image tokens match
        for inputs in (bench, synthetic):
            F.run_once(model, inputs, 1, torch.device("cpu"))


def test_part_times_and_op_profile(tiny, tiny_processor):
    inputs = F.benchmark_inputs(tiny_processor, 2)
    parts = F.part_times(tiny["base"], inputs, repeats=2)
    assert set(parts["part"]) == {"vision tower", "projector", "embeddings", "decoder blocks", "final norm",
                                  "lm_head", "other"}
    assert parts["share"].sum() == pytest.approx(100.0)
    assert (parts.set_index("part").drop("other")["ms"] > 0).all()
    ops = F.op_profile(tiny["base"], inputs, repeats=1, top=5)
    assert len(ops) == 5 and list(ops.columns) == ["op", "calls", "self_ms", "share"]
    assert ops["self_ms"].is_monotonic_decreasing


# ----------------------------------------------------------------------------------------------
# studylib bench


def bench_parser() -> argparse.ArgumentParser:
    from studylib import cli

    return cli.build_parser()


@pytest.fixture(scope="module")
def checkpoints(tiny, tiny_processor, tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    base = root / "base"
    tiny["base"].save_pretrained(base)
    tiny_processor.save_pretrained(base)
    res = P.prune(tiny["base"], "layerwise", "deepest", 0.30, None)
    P.save_pruned(res.model, res.plan, res.scores, root / "layer30", processor=tiny_processor)
    return base, root / "layer30"


def test_cli_bench_writes_json(checkpoints, tmp_path, capsys):
    base, pruned = checkpoints
    out = tmp_path / "bench.json"
    args = bench_parser().parse_args(["bench", str(base), str(pruned), "--batch-sizes", "1,2", "--new-tokens", "2",
                                      "--repeats", "2", "--warmup", "0", "--out", str(out)])
    args.func(args)
    result = json.loads(out.read_text())
    assert result["baseline"] == str(base) and result["models"] == [str(base), str(pruned)]
    assert result["device"] == "cpu" and result["batch_sizes"] == [1, 2]
    table = pd.DataFrame(result["table"])
    assert set(table["model"]) == {str(base), str(pruned)} and set(table["metric"]) == set(F.METRICS)
    speed = pd.DataFrame(result["speedups"])
    row = speed[(speed["model"] == str(pruned)) & (speed["metric"] == "prefill_ms") & (speed["batch_size"] == 2)]
    assert len(row) == 1 and float(row["ideal"].iloc[0]) > 1 and 0 < float(row["speedup"].iloc[0]) < math.inf
    printed = capsys.readouterr().out
    assert "batch size 2, prefill:" in printed and "| model | LM params |" in printed


@pytest.mark.parametrize("extra, message", [
    (["--batch-sizes", "0,8"], r"--batch-sizes: batch sizes must be positive ints \(e.g. 1,8,32\)"),
    (["--batch-sizes", "1,x"], r"--batch-sizes must be comma-separated positive ints"),
    (["--batch-sizes", "8,8"], r"batch sizes must not repeat"),
    (["--new-tokens", "0"], r"argument --new-tokens: must be an integer >= 1; got 0"),
    (["--repeats", "0"], r"argument --repeats: must be an integer >= 1; got 0"),
    (["--warmup", "-2"], r"argument --warmup: must be an integer >= 0; got -2"),
    (["--threads", "0"], r"argument --threads: must be an integer >= 1; got 0"),
    (["--dtype", "float8"], r"argument --dtype: invalid choice: 'float8'"),
    (["--device", "tpu"], r"argument --device: must be cpu, cuda, cuda:N or mps; got 'tpu'"),
])
def test_cli_bench_rejects_bad_input(checkpoints, tmp_path, capsys, extra, message):
    import re

    from studylib import cli

    base, _ = checkpoints
    try:
        code = cli.main(["bench", str(base), "--out", str(tmp_path / "x.json"), *extra])
    except SystemExit as e:  # argparse
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and re.search(message, err), err
    assert not (tmp_path / "x.json").exists()


def test_cli_bench_rejects_missing_models_cuda_without_gpu_and_bad_out(checkpoints, tmp_path, monkeypatch):
    base, _ = checkpoints
    parser = bench_parser()
    args = parser.parse_args(["bench", str(base), str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.json")])
    with pytest.raises(FileNotFoundError, match=r"MODEL '.*nowhere' is not a checkpoint folder"):
        args.func(args)
    args = parser.parse_args(["bench", str(base), str(base), "--out", str(tmp_path / "x.json")])
    with pytest.raises(ValueError, match="MODEL: each checkpoint once"):
        args.func(args)
    args = parser.parse_args(["bench", str(base), "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="--out .* is a folder"):
        args.func(args)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    args = parser.parse_args(["bench", str(base), "--device", "cuda", "--out", str(tmp_path / "x.json")])
    with pytest.raises(ValueError, match=r"--device cuda is not available on this machine; available: cpu"):
        args.func(args)


def test_cli_main_exits_2_on_bad_input(checkpoints, tmp_path, capsys):
    from studylib import cli

    base, _ = checkpoints
    assert cli.main(["bench", str(base), "--batch-sizes", "0", "--out", str(tmp_path / "x.json")]) == 2
    assert "studylib bench: error: --batch-sizes" in capsys.readouterr().err
