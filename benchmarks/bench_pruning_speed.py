"""How much does pruning to several ratios cost compared with one importance computation?

Scores are computed once per model and calibration set; each ratio then only needs a plan and a
pruned deep copy. Goal: pruning to the four study ratios (15/30/45/60 %) costs at most 1.5x one
importance computation.

    HF_HUB_OFFLINE=1 python benchmarks/bench_pruning_speed.py [--checkpoint DIR] [--repeats 5]

Without --checkpoint it builds a random LLaVA of about the default study size (Llama decoder hidden
192, 10 layers, 6 heads, MLP 512, vocab 600; CLIP vision hidden 128, 3 layers, 32x32 images, 8x8
patches). Prints one JSON object: median seconds per step and their ratio, for widthwise/taylor on
10 calibration samples and layerwise/bi on 50.
"""

import argparse
import json
import statistics
import time

import torch
from transformers import (
    AutoModelForImageTextToText,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
)

from studylib import pruning as P

RATIOS = (0.15, 0.30, 0.45, 0.60)


def build_model() -> LlavaForConditionalGeneration:
    torch.manual_seed(0)
    vision = CLIPVisionConfig(
        hidden_size=128, intermediate_size=512, num_hidden_layers=3, num_attention_heads=4, image_size=32, patch_size=8
    )
    text = LlamaConfig(
        hidden_size=192, intermediate_size=512, num_hidden_layers=10, num_attention_heads=6, vocab_size=600,
        max_position_embeddings=512, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=599, image_seq_length=16)
    return LlavaForConditionalGeneration(config).eval()


def random_batches(model, samples: int, batch_size: int = 5, text_tokens: int = 64, seed: int = 0) -> list[dict]:
    """Random image + text samples; the image fills (image_size / patch_size)^2 tokens (CLS dropped)."""
    vision = model.config.vision_config
    n_image = (vision.image_size // vision.patch_size) ** 2
    image_token, vocab = model.config.image_token_id, model.config.text_config.vocab_size
    g = torch.Generator().manual_seed(seed)
    out = []
    for start in range(0, samples, batch_size):
        b = min(batch_size, samples - start)
        ids = torch.randint(3, vocab, (b, n_image + text_tokens), generator=g)
        ids[ids == image_token] = 3
        ids[:, 1 : 1 + n_image] = image_token
        pixels = torch.randn(b, 3, vision.image_size, vision.image_size, generator=g)
        out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixel_values": pixels})
    return out


def bench(model, paradigm: str, criterion: str, calib: list[dict], repeats: int) -> dict:
    score_times, prune_times = [], []
    for _ in range(repeats):  # interleaved, so that machine noise hits both alike
        start = time.perf_counter()
        scores = P.compute_scores(model, paradigm, criterion, calib)
        score_times.append(time.perf_counter() - start)

        start = time.perf_counter()
        for ratio in RATIOS:  # plan + deepcopy + apply, reusing the scores
            P.prune(model, paradigm, criterion, ratio, None, scores=scores)
        prune_times.append(time.perf_counter() - start)
    plans = [P.make_plan(model, scores, r) for r in RATIOS]
    score_s, prune_s = statistics.median(score_times), statistics.median(prune_times)
    return {
        "paradigm": paradigm,
        "criterion": criterion,
        "calibration_samples": sum(len(b["input_ids"]) for b in calib),
        "importance_s": round(score_s, 4),
        "prune_4_ratios_s": round(prune_s, 4),
        "ratio": round(prune_s / score_s, 3),
        "goal": "<= 1.5",
        "ok": prune_s / score_s <= 1.5,
        "achieved_lm_ratios": [round(p.lm_ratio, 4) for p in plans],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="a saved LLaVA-style checkpoint instead of the random default model")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = AutoModelForImageTextToText.from_pretrained(args.checkpoint).eval() if args.checkpoint else build_model()
    lm, total = P.count_params(model)
    results = {
        "model": args.checkpoint or "random LLaVA (Llama 192x10, CLIP 128x3)",
        "lm_params": lm,
        "total_params": total,
        "threads": torch.get_num_threads(),
        "runs": [
            bench(model, "widthwise", "taylor", random_batches(model, 10), args.repeats),
            bench(model, "layerwise", "bi", random_batches(model, 50), args.repeats),
        ],
    }
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
