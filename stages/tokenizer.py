"""tokenizer: train Lucie's kind of tokenizer (or load a given tokenizer.json), measure fertility.

Lucie's tokenizer (see ../shared/lucie/tokenizer.json) is an HF `tokenizers` BPE with byte
fallback: ids 0-3 are <s> </s> <unk> <pad>, ids 4-259 the 256 byte tokens <0x00>..<0xFF>,
ids 260-299 reserved slots `<unusedN>` (the instruct tokenizer, built by the align stage, turns
265-267 into the chat header/eot markers, as Lucie's does), then the learned merges. Digits are split one by one, punctuation, newlines and
tabs are isolated, so numbers and code tokenise predictably and a chat turn's header
("...<|end_header_id|>\n\n") never merges with the first word of the answer. We reproduce that layout; the byte
tokens live in the vocabulary (not as "added tokens") so that decoding with
skip_special_tokens keeps them, as in Lucie's file.

Training data: the deduplicated documents of the train split (mix's hash split, so the held-out documents
are never seen), each once, before any upsampling: Lucie's tokenizer was trained on its own selection of the
corpus before the blend weights were set, and those weights are in tokens, so the mix stage counts its tokens
with this tokenizer (dvc.yaml: dedup -> tokenizer -> mix).

Fertility (tokens per whitespace word) per language goes to metrics/tokenizer.json; it is
the number Lucie's authors report (fr 1.74, en 1.70, de 2.02, es 1.72, it 1.88 on Wikipedia).
"""
from __future__ import annotations

import json
import shutil
from collections import defaultdict
from pathlib import Path

from stages.core import files
from stages.lib.split import h64, is_valid
from stages.core.runtime import StageContext, stage

IN, OUT = "data/dedup", "artifacts/tokenizer"
SPECIAL = ["<s>", "</s>", "<unk>", "<pad>"]
BYTES = [f"<0x{i:02X}>" for i in range(256)]
RESERVED = [f"<unused{i}>" for i in range(40)]  # ids 260..299; align renames 265-267 (stages.align.CHAT_TOKENS)


def build_trainer_tokenizer():
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex("[\r\x00]"), "")])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first"),
        pre_tokenizers.Split(Regex("[\n\t]"), behavior="isolated"),
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.Punctuation(behavior="isolated"),
    ])
    tok.decoder = decoders.Sequence([
        decoders.ByteFallback(), decoders.Metaspace(replacement="▁", prepend_scheme="first"), decoders.Fuse(),
    ])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 0)])
    return tok


def train(texts: list[str], vocab_size: int, min_frequency: int):
    from tokenizers import Tokenizer, trainers

    tok = build_trainer_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, limit_alphabet=1000,
        special_tokens=SPECIAL + BYTES + RESERVED, show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    # Surgery as in Lucie's file: only the 4 specials stay "added tokens"; bytes and reserved slots are plain vocab.
    spec = json.loads(tok.to_str())
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["content"] in SPECIAL]
    return Tokenizer.from_str(json.dumps(spec))


def save_hf(tok, out: Path) -> None:
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        add_bos_token=True, add_eos_token=False, clean_up_tokenization_spaces=False,
    )
    fast.save_pretrained(str(out))


def fertility(tok, docs: list[dict]) -> dict:
    tokens, words = defaultdict(int), defaultdict(int)
    for d in docs:
        tokens[d["lang"]] += len(tok.encode(d["text"], add_special_tokens=False).ids)
        words[d["lang"]] += len(d["text"].split())
    return {lang: round(tokens[lang] / words[lang], 4) for lang in sorted(words) if words[lang]}


def run(ctx: StageContext) -> None:
    from tokenizers import Tokenizer

    p = ctx.params.tokenizer
    seed, held_out = ctx.params.seed, ctx.params.mix.valid_fraction
    docs = sorted((d for d in files.read_docs(ctx.path(IN)) if not is_valid(seed, d["id"], held_out)),
                  key=lambda d: d["id"])
    with files.atomic_dir(ctx.path(OUT)) as tmp:
        if p.from_file:
            src = ctx.path(p.from_file)
            tok = Tokenizer.from_file(str(src))
            shutil.copy(src, tmp / "tokenizer.json")  # whatever its own name, downstream reads tokenizer.json
            beside = [src.parent / f for f in ("tokenizer_config.json", "special_tokens_map.json")]
            if beside[0].exists():  # a full HF tokenizer directory: keep its own config
                for f in beside:
                    if f.exists():
                        shutil.copy(f, tmp / f.name)
            else:
                save_hf(tok, tmp)
            origin = f"loaded from {p.from_file}"
        else:
            # Cap by a hash of the id, not id order (ids group by language: a prefix would drop languages).
            chosen = sorted(docs, key=lambda d: h64(ctx.params.seed, "tokenizer", d["id"]))[: p.max_train_docs]
            texts = [d["text"] for d in chosen]
            tok = train(texts, p.vocab_size, p.min_frequency)
            save_hf(tok, tmp)
            origin = f"trained on {len(texts)} documents"
    fert = fertility(tok, docs)
    metrics = {"vocab_size": tok.get_vocab_size(), "fertility": fert, "train_docs": len(docs), "origin": origin}
    ctx.write_metrics("metrics/tokenizer.json", metrics)
    ctx.tracker.artifact(ctx.path(OUT) / "tokenizer.json", "tokenizer")
    ctx.summary(f"{origin}, vocab {tok.get_vocab_size()}, fertility " + " ".join(f"{k} {v}" for k, v in fert.items()) + f" -> {OUT}")


def main() -> None:
    with stage("tokenizer") as ctx:
        run(ctx)


if __name__ == "__main__":
    main()
