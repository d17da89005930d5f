"""From LLaVA records to model inputs: prompts, tokenisation, collation and packing.

The prompt is LLaVA-1.5's: "USER: <image>\\n{question} ASSISTANT: {answer}</s>" (Bunny's starts with its system
sentence). `encode` writes input_ids = prefix + sum over turns of (prompt + answer + </s>) and labels = -100 on
the prompt (and image tokens), the ids on the answers; `Collator` right-pads a batch, `PackingCollator` packs it
into rows of about `capacity` tokens (first-fit decreasing, `pack_rows`).
"""

from __future__ import annotations

import torch


LLAVA_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
                "The assistant gives helpful, detailed, and polite answers to the user's questions.")


def system_prompt(processor) -> str:
    """The system sentence that starts a conversation: Bunny's (its chat template carries it), else none
    (the embedded models, and llava-hf's LLaVA-1.5 template, which has no default system prompt)."""
    return LLAVA_SYSTEM if LLAVA_SYSTEM in (getattr(processor, "chat_template", None) or "") else ""


def prompt_text(human: str, system: str = "") -> str:
    """First-turn prompt: "[system ]USER: <image>\n{question} ASSISTANT:" (LLaVA-1.5 / Bunny format)."""
    return f"{system} USER: {human} ASSISTANT:" if system else f"USER: {human} ASSISTANT:"


def special_prefix(tokenizer) -> list[int]:
    """The ids a tokenizer puts before any text by itself (Llama's and Gemma's <bos>; none for the embedded BPE)."""
    plain = tokenizer("x", add_special_tokens=False)["input_ids"]
    full = tokenizer("x")["input_ids"]
    start = next((i for i in range(len(full)) if full[i:i + len(plain)] == plain), 0)
    return full[:start]


def encode(example: dict, processor, n_image_tokens: int) -> dict:
    """input_ids = the tokenizer's own prefix (<bos>, if any), then for each turn: prompt + answer + </s>; labels = -100 on prompts (and image tokens), ids on answers.

    Multi-turn follows LLaVA-1.5: "USER: <image>\\nq1 ASSISTANT: a1</s>USER: q2 ASSISTANT: a2</s>".
    The `<image>` placeholder is expanded to `n_image_tokens` copies, exactly as `LlavaProcessor` does.
    """
    tok = processor.tokenizer
    ids: list[int] = special_prefix(tok)  # e.g. <bos>: what the processor adds at evaluation
    labels: list[int] = [-100] * len(ids)
    conv = example["conversations"]
    system = system_prompt(processor)
    for turn, (human, gpt) in enumerate(zip(conv[0::2], conv[1::2])):
        prompt = prompt_text(human["value"], system if turn == 0 else "").replace("<image>", "<image>" * n_image_tokens)
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        a_ids = tok(" " + gpt["value"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        ids += p_ids + a_ids
        labels += [-100] * len(p_ids) + a_ids
    return {"input_ids": ids, "labels": labels}


def num_image_tokens(processor) -> int:
    """Image tokens per image: (size / patch)^2 + extra tokens, minus the CLS token for the "default" strategy."""
    ip = processor.image_processor
    size = ip.crop_size["height"] if getattr(ip, "do_center_crop", False) else ip.size.get("height", ip.size.get("shortest_edge"))
    n = (size // processor.patch_size) ** 2 + processor.num_additional_image_tokens
    return n - 1 if processor.vision_feature_select_strategy == "default" else n


def tokenize_dataset(ds, processor, max_length: int | None = None):
    """Add `input_ids` and `labels` columns (images stay as images; the collator normalises them).

    max_length: token limit per example; None = 240 text tokens + the image tokens (256 for the embedded
    models' 16; 816 for LLaVA-1.5's 576, 969 for Bunny's 729)."""
    n = num_image_tokens(processor)
    max_length = max_length or 240 + n
    out = ds.map(lambda ex: encode(ex, processor, n), desc="tokenize")
    too_long = [i for i, ids in zip(out["id"], out["input_ids"]) if len(ids) > max_length]
    if too_long:
        raise ValueError(f"{len(too_long)} examples exceed max_length={max_length} tokens (first: {too_long[0]})")
    return out


class Collator:
    """Right-pad `input_ids` / `labels` and turn images into `pixel_values` with the processor's image
    processor. Text-only examples get no pixels; a batch mixing both is valid for LLaVA (image tokens
    are only where `<image>` was)."""

    def __init__(self, processor):
        self.processor = processor
        self.pad = processor.tokenizer.pad_token_id

    def __call__(self, batch: list[dict]) -> dict:
        n = max(len(b["input_ids"]) for b in batch)
        ids = torch.full((len(batch), n), self.pad, dtype=torch.long)
        labels = torch.full((len(batch), n), -100, dtype=torch.long)
        mask = torch.zeros((len(batch), n), dtype=torch.long)
        for i, b in enumerate(batch):
            k = len(b["input_ids"])
            ids[i, :k] = torch.tensor(b["input_ids"])
            labels[i, :k] = torch.tensor(b["labels"])
            mask[i, :k] = 1
        out = {"input_ids": ids, "attention_mask": mask, "labels": labels}
        return self.add_pixels(out, batch)

    def add_pixels(self, out: dict, batch: list[dict]) -> dict:
        """`out` plus the batch's images as `pixel_values`, in batch order (none for text-only batches)."""
        images = [b["image"].convert("RGB") for b in batch if b.get("image") is not None]
        if images:
            out["pixel_values"] = self.processor.image_processor(images, return_tensors="pt")["pixel_values"]
        return out


def pack_rows(lengths: list[int], capacity: int) -> list[list[int]]:
    """First-fit decreasing: indices of examples grouped into rows of at most max(capacity, longest) tokens."""
    capacity = max([capacity, *lengths])
    rows: list[list[int]] = []
    free: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        r = next((r for r in range(len(rows)) if free[r] >= lengths[i]), None)
        if r is None:
            rows.append([])
            free.append(capacity)
            r = len(rows) - 1
        rows[r].append(i)
        free[r] -= lengths[i]
    return rows


class PackingCollator(Collator):
    """Padding-free batches: the batch's examples are packed into rows of about `capacity` tokens
    (`pack_rows`), and each example's position ids restart at 0. Without an attention mask, transformers
    reads the restarting position ids as packed sequences and builds a block-diagonal causal mask, so each
    example attends only to itself: the loss is the padded batch's (tested), on far fewer tokens (here a
    batch of 32 averages 43 tokens per example but pads to ~86).

    Written here because `transformers.DataCollatorWithFlattening` packs a whole batch into one row: exact
    too, but on CPU the attention over one ~2,000-token row costs more than the padding saves
    (`python benchmarks/bench_packing.py --capacities 160,100000` compares them)."""

    def __init__(self, processor, capacity: int = 160):
        super().__init__(processor)
        self.capacity = capacity

    def __call__(self, batch: list[dict]) -> dict:
        rows = pack_rows([len(b["input_ids"]) for b in batch], self.capacity)
        width = max(sum(len(batch[i]["input_ids"]) for i in row) for row in rows)
        ids = torch.full((len(rows), width), self.pad, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        positions = torch.zeros((len(rows), width), dtype=torch.long)
        for r, row in enumerate(rows):
            k = 0
            for i in row:
                b = batch[i]
                n = len(b["input_ids"])
                ids[r, k:k + n] = torch.tensor(b["input_ids"])
                labels[r, k:k + n] = torch.tensor(b["labels"])
                positions[r, k:k + n] = torch.arange(n)
                k += n
            positions[r, k:] = torch.arange(width - k)  # the tail of padding is one more (ignored) sequence
        out = {"input_ids": ids, "position_ids": positions, "labels": labels, "use_cache": False}
        # image features fill the <image> tokens in reading order: row by row, example by example
        return self.add_pixels(out, [batch[i] for row in rows for i in row])
