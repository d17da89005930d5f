"""Pruned checkpoints reload in a fresh process.

- Same widths in every block, and layer removal: stock transformers classes only; the child process
  never imports studylib.
- Per-layer widths (the study's default skips the first and last blocks): the child imports only
  `studylib.pruned_modeling`, which registers the config/model classes with the Auto classes.

Each child loads every checkpoint, recomputes the logits on the saved probe batch and compares them
with the logits of the in-memory pruned model.
"""

import copy
import json
import os
import subprocess
import sys

import pytest
import torch
from transformers import LlamaForCausalLM, Phi3ForCausalLM

from studylib import pruning as P
from studylib.pruned_modeling import is_pruned_config

# the tiny model builders of test_pruning.py
sys.path.insert(0, os.path.dirname(__file__))
from test_pruning import FAMILIES, batches, causal_lm, llava, logits  # noqa: E402

CHILD = r"""
import json, sys
from pathlib import Path
import torch
torch.set_num_threads(1)
{imports}
from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

results = {{}}
for ckpt in sorted(Path(sys.argv[1]).iterdir()):
    probe = torch.load(ckpt / "probe.pt")
    auto = AutoModelForImageTextToText if "pixel_values" in probe["batch"] else AutoModelForCausalLM
    model = auto.from_pretrained(ckpt).eval()
    with torch.no_grad():
        out = model(**probe["batch"]).logits
    results[ckpt.name] = {{
        "equal": bool(torch.equal(out, probe["logits"])),
        "class": type(model).__name__,
        "decoder": type(model.model.language_model if hasattr(model.model, "language_model") else model.model).__name__,
    }}
results["studylib imported"] = any(name.startswith("studylib") for name in sys.modules)
print(json.dumps(results))
"""


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def save_with_probe(result, out_dir, image=True):
    probe = batches(n=1, seed=1, image=image)[0]
    P.save_pruned(result.model, result.plan, result.scores, out_dir)
    torch.save({"batch": probe, "logits": logits(result.model, probe)}, out_dir / "probe.pt")


def run_child(root, imports: str) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error",
           "OMP_NUM_THREADS": "1"}
    code = CHILD.format(imports=imports)
    proc = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True, env=env,
                          cwd=root, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_uniform_widths_and_layer_removal_reload_with_stock_classes(tmp_path):
    root = tmp_path / "ckpts"
    calib = batches()
    for family in FAMILIES:
        model = llava(family)
        scores = P.compute_scores(model, "widthwise", "taylor", calib)
        if family in ("llama", "llama-gqa", "gemma3"):  # LlamaConfig/Gemma3TextConfig want hidden % heads == 0
            plan = P.make_plan(model, scores, None, layers=range(4), widths=(2, 2, 32))
        else:
            plan = P.make_plan(model, scores, 0.3, layers=range(4))
        pruned = P.apply_plan(copy.deepcopy(model), plan)
        assert not is_pruned_config(pruned.config.text_config), family
        save_with_probe(P.PruneResult(pruned, plan, scores), root / f"width-{family}")
    for family in ("llama", "gemma3", "phi"):
        save_with_probe(P.prune(llava(family), "layerwise", "bi", 0.3, calib), root / f"layer-{family}")
    for cls, family in ((LlamaForCausalLM, "llama"), (Phi3ForCausalLM, "phi3")):
        model, text = causal_lm(cls, family), batches(image=False)
        save_with_probe(P.prune(model, "widthwise", "l1", 0.3, text, layers=range(4), widths=(2, 2, 16)),
                        root / f"causal-width-{family}", image=False)
        save_with_probe(P.prune(model, "layerwise", "angular", 0.3, text), root / f"causal-layer-{family}", image=False)

    results = run_child(root, imports="")
    assert results.pop("studylib imported") is False
    assert len(results) == len(FAMILIES) + 3 + 4
    for name, r in results.items():
        assert r["equal"], name
        assert "Pruned" not in r["class"] + r["decoder"], (name, r)


def test_per_layer_widths_reload_after_importing_pruned_modeling(tmp_path):
    root = tmp_path / "ckpts"
    calib = batches()
    for family in ("llama", "llama-gqa", "gemma3", "phi", "phi3"):
        result = P.prune(llava(family), "widthwise", "taylor", 0.3, calib)  # default range(1, L-1)
        assert is_pruned_config(result.model.config.text_config)
        save_with_probe(result, root / f"width-{family}")
    result = P.prune(llava("qwen3"), "widthwise", "wanda", 0.25, calib, global_ranking=True)
    save_with_probe(result, root / "global-qwen3")
    # width pruning then layer removal: the per-layer lists shrink with the layers
    pruned = P.prune(llava("mistral", layers=5), "widthwise", "l2", 0.2, calib).model
    result = P.prune(pruned, "layerwise", "bi", 0.2, calib)
    assert len(result.model.config.text_config.layer_num_attention_heads) == len(result.plan.kept_layers)
    save_with_probe(result, root / "width-then-layer-mistral")
    result = P.prune(causal_lm(), "widthwise", "activation", 0.3, batches(image=False))
    save_with_probe(result, root / "causal-width-llama", image=False)

    results = run_child(root, imports="import studylib.pruned_modeling  # registers the Pruned* classes")
    results.pop("studylib imported")
    assert len(results) == 8
    for name, r in results.items():
        assert r["equal"], name
        assert "Pruned" in r["class"] + r["decoder"], (name, r)  # PrunedLlamaModel / PrunedLlamaForCausalLM
