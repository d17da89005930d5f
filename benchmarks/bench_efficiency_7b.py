"""Speed of a 7B-shaped LLaVA pruned layerwise and widthwise at 15/30/45/60 %, measured on a GPU.

LLaVA-v1.5-7B's architecture (CLIP ViT-L/14 at 336 px: 576 image tokens from the penultimate layer; 2-layer
GELU projector; Vicuna-7B = Llama with hidden 4096, 32 layers, 32 heads, MLP 11008, vocabulary 32064) with
random weights: speed depends on the shapes, not on the values, so nothing is downloaded. The model is built
directly on the device in half precision; pruned copies use data-free criteria (layerwise `deepest`, widthwise
`l2`: with random weights any criterion gives the same shapes, and Taylor scores would need a backward pass of
7B), and every model is measured in one process, interleaved, by `studylib.efficiency.measure` on synthetic
inputs (one image + `--text-tokens` text tokens per row): prefill latency, decode tokens/s, throughput per
batch size, peak memory (`torch.cuda.max_memory_allocated`), FLOPs per token; then speedups against the
unpruned model next to the ideal (LM FLOP ratio).

    python benchmarks/bench_efficiency_7b.py --out reports/efficiency_7b.json      # needs a GPU (~80 GB for all
        [--paradigms layerwise,widthwise] [--ratios 0.15,0.3,0.45,0.6]              #  9 models at once; pass one
        [--batch-sizes 1,8,32] [--new-tokens 32] [--repeats 5] [--round-to 1]       #  paradigm to halve that)
    python benchmarks/bench_efficiency_7b.py --shape tiny --device cpu --dtype float32 --threads 1  # a dry run
                                                          # of the same code path, small shapes, on a CPU
Not run in the CPU-only development session that wrote it (no GPU there): its figures are still to be recorded.
"""

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pandas as pd  # noqa: E402
import torch  # noqa: E402
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration  # noqa: E402

from studylib import efficiency as F  # noqa: E402
from studylib import pruning as P  # noqa: E402

# LLaVA-v1.5-7B (llava-hf/llava-1.5-7b-hf config.json), and a small stand-in for a dry run on a CPU
SHAPES = {
    "7b": dict(
        vision=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                    image_size=336, patch_size=14, projection_dim=768),
        text=dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                  num_key_value_heads=32, vocab_size=32064, max_position_embeddings=4096, rms_norm_eps=1e-5),
        image_token_id=32000,
    ),
    "tiny": dict(
        vision=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                    image_size=56, patch_size=14, projection_dim=64),
        text=dict(hidden_size=128, intermediate_size=344, num_hidden_layers=8, num_attention_heads=8,
                  num_key_value_heads=8, vocab_size=1000, max_position_embeddings=512, rms_norm_eps=1e-5),
        image_token_id=999,
    ),
}


def build(shape: str, device: torch.device, dtype: torch.dtype) -> LlavaForConditionalGeneration:
    """A randomly initialised LLaVA of the given shape, created directly on `device` in `dtype`."""
    s = SHAPES[shape]
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(**s["vision"]), text_config=LlamaConfig(**s["text"]),
        image_token_id=s["image_token_id"], vision_feature_layer=-2, vision_feature_select_strategy="default",
        image_seq_length=(s["vision"]["image_size"] // s["vision"]["patch_size"]) ** 2,
        projector_hidden_act="gelu", tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # parameters are created in half precision: no fp32 copy of 7B
    try:
        with torch.device(device):
            model = LlavaForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(before)
    model.generation_config.pad_token_id = 0
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="7b", choices=list(SHAPES))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="float16", choices=list(F.DTYPES))
    parser.add_argument("--paradigms", default="layerwise,widthwise")
    parser.add_argument("--ratios", default="0.15,0.3,0.45,0.6")
    parser.add_argument("--round-to", type=int, default=1, help="widthwise: kept neurons a multiple of K")
    parser.add_argument("--batch-sizes", default="1,8,32")
    parser.add_argument("--text-tokens", type=int, default=64, help="text tokens per row besides the image")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--profile", action="store_true", help="time per model part and top operators at batch 8")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (a dry run on a busy CPU: 1)")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = F.check_device(args.device)  # a clear error where there is no GPU
    dtype = F.DTYPES[args.dtype]
    sizes = F.parse_batch_sizes(args.batch_sizes)
    ratios = [float(r) for r in args.ratios.split(",")]
    paradigms = [p.strip() for p in args.paradigms.split(",")]
    for p in paradigms:
        P._check_choice("--paradigms", p, P.PARADIGMS)

    t0 = time.time()
    base = build(args.shape, device, dtype)
    models, plans = {"unpruned": base}, {}
    for paradigm in paradigms:
        criterion = "deepest" if paradigm == "layerwise" else "l2"
        scores = P.compute_scores(base, paradigm, criterion, [])
        for ratio in ratios:
            name = f"{paradigm}-{round(100 * ratio)}"
            res = P.prune(base, paradigm, criterion, ratio, None, scores=scores,
                          **({"round_to": args.round_to} if paradigm == "widthwise" else {}))
            models[name] = res.model
            plans[name] = {"lm_ratio": res.plan.lm_ratio, "model_ratio": res.plan.model_ratio,
                           "kept_layers": res.plan.kept_layers,
                           "widths": sorted({(b.num_heads, b.num_kv_heads, b.intermediate_size)
                                             for b in P.describe_lm(res.model).blocks})}
    if device.type == "cuda":
        torch.cuda.empty_cache()
    build_s = time.time() - t0

    def inputs(bs: int) -> dict:
        return F.synthetic_inputs(base, bs, text_tokens=args.text_tokens)

    t0 = time.time()
    table, runs = F.measure_runs(models, None, sizes, args.new_tokens, device, args.repeats, args.warmup,
                                 inputs=inputs, progress=True)
    measure_s = time.time() - t0
    speed = F.speedups(table, "unpruned", runs)
    result = {
        "shape": args.shape, "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "dtype": args.dtype, "torch": torch.__version__, "batch_sizes": sizes, "text_tokens": args.text_tokens,
        "new_tokens": args.new_tokens, "repeats": args.repeats, "warmup": args.warmup,
        "memory_method": F.memory_method(device), "build_and_prune_s": round(build_s, 1),
        "measure_s": round(measure_s, 1), "plans": plans,
        "table": F.to_records(table), "speedups": F.to_records(speed), "runs": F.to_records(runs),
    }
    if args.profile:
        batch = inputs(8 if 8 in sizes else sizes[0])
        result["profile"] = {
            name: {"parts": F.to_records(F.part_times(models[name], batch, device)),
                   "ops": F.to_records(F.op_profile(models[name], batch, device, top=10))}
            for name in ["unpruned", *[f"{p}-30" for p in paradigms]] if name in models}
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1))
    F.print_speed_tables(table, speed, sizes)
    mem = table[table["metric"] == "peak_memory_mb"].pivot(index="model", columns="batch_size", values="median")
    print(f"\n### peak memory, MiB ({result['memory_method']}; weights + peak activations)\n")
    print(F.markdown(mem.reset_index().rename(columns=str)))
    for name, prof in result.get("profile", {}).items():
        print(f"\n### where the time goes: {name}\n")
        print(F.markdown(pd.DataFrame(prof["parts"])))
        print()
        print(F.markdown(pd.DataFrame(prof["ops"])))


if __name__ == "__main__":
    main()
