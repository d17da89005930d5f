"""Greedy answers of a LLaVA-style model to the first question of each record: the one inference loop that
evaluation (embedded benchmarks) and `studylib.benchmarks` (real ones) share."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from . import collate as C


@torch.no_grad()
def generate_answers(model, processor, ds, batch_size: int = 64, max_new_tokens: int = 8,
                     blank_images: bool = False, progress: bool = True) -> list[str]:
    """Greedy answers for every record of `ds` (left-padded batches, KV cache, stop at </s>).

    `blank_images=True` replaces every image by a black one (does the model use the image?).
    """
    tok = processor.tokenizer
    tok.padding_side = "left"
    system = C.system_prompt(processor)
    model.eval()
    answers: list[str] = []
    for start in tqdm(range(0, len(ds), batch_size), desc="generate", disable=not progress, leave=False):
        batch = ds[start:start + batch_size]
        prompts = [C.prompt_text(c[0]["value"], system) for c in batch["conversations"]]
        images = [im.convert("RGB") for im in batch["image"] if im is not None]
        if blank_images:
            images = [im.point(lambda _: 0) for im in images]
        inputs = processor(text=prompts, images=images or None, padding=True, return_tensors="pt").to(model.device)
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        answers += tok.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    return [a.strip() for a in answers]
