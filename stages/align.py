"""align: supervised fine-tuning on an instruction mix, then DPO, with trl, on the base model.

Lucie-7B-Instruct stopped at SFT (its cards invite users to add preference tuning); we run
both so that the whole path base -> SFT -> DPO is reproducible.

* Tokenizer: Lucie's instruct tokenizer is its base tokenizer with the reserved slots 265-267
  renamed to the three chat markers and made special; `instruct_tokenizer` does exactly that,
  on our trained tokenizer or on Lucie's own file. eos becomes `<|eot_id|>`, pad stays `<pad>`.
* Chat template: Lucie's (Llama-3 style headers, no default system prompt), rewritten with
  `{% generation %}` markers so trl computes the loss on assistant turns only; it renders
  exactly the same text as Lucie's.
* Instruction mix: components with weights, as in Lucie's mix files. The SFT run consumes
  max_steps x batch_size conversations; each component gets its share (largest remainder),
  drawn from a seeded permutation of the component and cycled when the share exceeds it.
  Replies naming another assistant are dropped first (Lucie's `filter_strings`), and counted.
* LR: cosine from lr to min_lr (Lucie: 3e-5 -> 3e-6). DPO's reference model and beta and loss
  type come from params.

Input files are checked line by line before any training: a malformed line is an error
naming the file and line. trl's own reporting is off (report_to="none") and its log
history is copied to MLflow here, so the run id stays under the pipeline's control.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from stages.core import files
from stages.lib.split import h64
from stages.core.runtime import StageContext, StageError, stage

BASE, OUT = "artifacts/models/base", "artifacts/models/instruct"
CHAT_TOKENS = {265: "<|start_header_id|>", 266: "<|end_header_id|>", 267: "<|eot_id|>"}

CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% generation %}{{- message['content'] | trim + '<|eot_id|>' }}{% endgeneration %}"
    "{%- else %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{%- endif %}"
)
ROLES = {"system", "user", "assistant"}


class AlignDataError(StageError):
    pass


def _messages_ok(msgs, where: str, last: str | None = None) -> None:
    if not isinstance(msgs, list) or not msgs:
        raise AlignDataError(f"{where}: expected a non-empty list of messages")
    for m in msgs:
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise AlignDataError(f"{where}: each message needs a role in {sorted(ROLES)} and a string content")
    if last and msgs[-1]["role"] != last:
        raise AlignDataError(f"{where}: the last message must be from {last!r}")


def load_jsonl(path: Path, kind: str) -> list[dict]:
    """Read and check an SFT ('messages') or preference ('prompt', 'chosen', 'rejected') file."""
    if not path.exists():
        raise AlignDataError(f"{path}: file not found")
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as err:
            raise AlignDataError(f"{where}: invalid JSON ({err})") from None
        if not isinstance(rec, dict):
            raise AlignDataError(f"{where}: expected a JSON object")
        if kind == "sft":
            _messages_ok(rec.get("messages"), where, last="assistant")
            rows.append({"messages": rec["messages"]})
        else:
            for key in ("prompt", "chosen", "rejected"):
                if key not in rec:
                    raise AlignDataError(f"{where}: missing {key!r}")
            _messages_ok(rec["prompt"], where + " (prompt)", last="user")
            _messages_ok(rec["chosen"], where + " (chosen)", last="assistant")
            _messages_ok(rec["rejected"], where + " (rejected)", last="assistant")
            rows.append({k: rec[k] for k in ("prompt", "chosen", "rejected")})
    if not rows:
        raise AlignDataError(f"{path}: no records")
    return rows


def instruct_tokenizer(base_dir: Path):
    """Lucie's instruct tokenizer from a base one: slots 265-267 become the special chat markers."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    spec = json.loads(Tokenizer.from_file(str(base_dir / "tokenizer.json")).to_str())
    by_id = {i: t for t, i in spec["model"]["vocab"].items()}
    for i, marker in CHAT_TOKENS.items():
        old = by_id.get(i)
        if old != marker and not (old or "").startswith("<unused"):
            raise StageError(f"{base_dir}/tokenizer.json: id {i} holds {old!r}, not a reserved <unusedN> slot "
                             f"that can become {marker}")
        spec["model"]["vocab"][marker] = spec["model"]["vocab"].pop(old)
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["id"] not in CHAT_TOKENS] + [
        {"id": i, "content": m, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
         "special": True} for i, m in CHAT_TOKENS.items()]
    spec["added_tokens"].sort(key=lambda t: t["id"])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(spec)), bos_token="<s>", eos_token="<|eot_id|>",
        unk_token="<unk>", pad_token="<pad>", add_bos_token=True, add_eos_token=False,
        clean_up_tokenization_spaces=False,
    )
    # Plain text gets <s> as with the base tokenizer; the template writes <s> itself, and chat tokenization
    # (apply_chat_template, trl) adds no special tokens, so a conversation starts with exactly one <s>.
    tok.chat_template = CHAT_TEMPLATE
    return tok


def assistant_text(conversation: dict) -> str:
    return "\n".join(m["content"] for m in conversation["messages"] if m["role"] == "assistant")


def build_mix(parts, filter_strings: list[str], total: int, seed: int, root: Path) -> tuple[list[dict], dict]:
    """`total` conversations drawn from the mix components by weight; returns (rows, per-component stats)."""
    needles = [s.lower() for s in filter_strings]
    loaded, stats = {}, {}
    for part in parts:
        rows = load_jsonl(root / part.path, "sft")
        kept = [r for r in rows if not any(n in assistant_text(r).lower() for n in needles)]
        loaded[part.name] = sorted(kept, key=lambda r: h64(seed, "sft-mix", part.name, json.dumps(r, sort_keys=True)))
        stats[part.name] = {"path": part.path, "weight": part.weight, "read": len(rows),
                            "dropped_filter_strings": len(rows) - len(kept), "available": len(kept)}
    # Largest remainder: shares that sum to exactly `total`, ties broken by component order.
    wsum = sum(p.weight for p in parts)
    exact = [(p.name, total * p.weight / wsum) for p in parts]
    counts = {n: int(x) for n, x in exact}
    for n, x in sorted(exact, key=lambda nx: -(nx[1] - int(nx[1])))[: total - sum(counts.values())]:
        counts[n] += 1
    out = []
    for name, n in counts.items():
        pool = loaded[name]
        if n and not pool:
            raise AlignDataError(f"mix component {name!r} ({stats[name]['path']}): no conversation left after "
                                 f"filter_strings, but its weight asks for {n}")
        out += [pool[i % len(pool)] for i in range(n)]
        stats[name].update(samples=n, epochs=round(n / len(pool), 4) if pool else 0.0)
    out.sort(key=lambda r: h64(seed, "sft-order", json.dumps(r, sort_keys=True)))
    return out, stats


def common_args(seed: int, out: str) -> dict:
    return dict(output_dir=out, report_to="none", save_strategy="no", use_cpu=True, dataloader_num_workers=0,
                disable_tqdm=True, logging_steps=1, seed=seed, data_seed=seed,
                logging_nan_inf_filter=False)  # NonFiniteGuard must see a NaN loss, not the running mean


def first_last(history: list[dict], key: str) -> tuple[float | None, float | None]:
    vals = [h[key] for h in history if key in h]
    return (vals[0], vals[-1]) if vals else (None, None)


def run(ctx: StageContext) -> None:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, GenerationConfig, PrinterCallback
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    from stages.lib.training.align_guard import NonFiniteGuard

    p, seed = ctx.params.align, ctx.params.seed
    # Every input is read and checked before the first training step.
    sft_rows, mix = build_mix(p.sft.mix, p.sft.filter_strings, p.sft.max_steps * p.sft.batch_size, seed, ctx.root)
    dpo_rows = load_jsonl(ctx.path(p.dpo.data), "dpo")
    torch.set_num_threads(ctx.params.pretrain.threads)
    torch.manual_seed(seed)
    tok = instruct_tokenizer(ctx.path(BASE))
    model = AutoModelForCausalLM.from_pretrained(str(ctx.path(BASE)), dtype=torch.float32)

    with files.scratch_dir(ctx.path(".lucie/align")) as work:  # not /tmp: a killed run's is removed by the next
        sft = SFTTrainer(
            model=model, processing_class=tok, train_dataset=Dataset.from_list([{"messages": r["messages"]} for r in sft_rows]),
            args=SFTConfig(max_steps=p.sft.max_steps, per_device_train_batch_size=p.sft.batch_size,
                           learning_rate=p.sft.lr, lr_scheduler_type="cosine_with_min_lr",
                           lr_scheduler_kwargs={"min_lr": p.sft.min_lr}, max_length=p.sft.max_length,
                           assistant_only_loss=True, **common_args(seed, f"{work}/sft")),
            callbacks=[NonFiniteGuard("SFT", "align.sft")],
        )
        sft.remove_callback(PrinterCallback)  # per-step dicts on stdout; the history goes to MLflow instead
        sft.train()
        sft_hist = sft.state.log_history
        ref = None  # trl keeps a frozen copy of the SFT model
        if p.dpo.ref_model == "base":
            ref = AutoModelForCausalLM.from_pretrained(str(ctx.path(BASE)), dtype=torch.float32)
        dpo = DPOTrainer(
            model=sft.model, ref_model=ref, processing_class=tok, train_dataset=Dataset.from_list(dpo_rows),
            args=DPOConfig(max_steps=p.dpo.max_steps, per_device_train_batch_size=p.dpo.batch_size,
                           learning_rate=p.dpo.lr, beta=p.dpo.beta, loss_type=[p.dpo.loss_type],
                           max_length=p.dpo.max_length, **common_args(seed, f"{work}/dpo")),
            callbacks=[NonFiniteGuard("DPO", "align.dpo")],
        )
        dpo.remove_callback(PrinterCallback)
        dpo.train()
        dpo_hist = dpo.state.log_history
        final = dpo.model

    with files.atomic_dir(ctx.path(OUT)) as tmp:
        final.generation_config = GenerationConfig(
            bos_token_id=0, eos_token_id=[tok.convert_tokens_to_ids("<|eot_id|>"), 1], pad_token_id=3,
            do_sample=True, temperature=0.6, top_p=0.9,  # Lucie's generation defaults
        )
        final.save_pretrained(str(tmp), safe_serialization=True)
        tok.save_pretrained(str(tmp))
        shutil.copy(ctx.path(BASE) / "training_state.json", tmp / "base_training_state.json")

    for prefix, hist in (("sft", sft_hist), ("dpo", dpo_hist)):
        for key in ("loss", "learning_rate", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"):
            ctx.tracker.metric_series(f"{prefix}/{key}", [(h["step"], h[key]) for h in hist if key in h])
    for name, st in mix.items():  # the mix actually seen: one epoch over exactly these samples
        ctx.tracker.metric_series(f"sft/mix/{name}/samples", [(0, st["samples"])])
    sft_first, sft_last = first_last(sft_hist, "loss")
    dpo_first, dpo_last = first_last(dpo_hist, "loss")
    _, margin = first_last(dpo_hist, "rewards/margins")
    _, accuracy = first_last(dpo_hist, "rewards/accuracies")
    dropped = sum(st["dropped_filter_strings"] for st in mix.values())
    metrics = {
        "sft": {"examples": len(sft_rows), "steps": p.sft.max_steps, "first_loss": sft_first, "final_loss": sft_last,
                "mix": mix, "dropped_filter_strings": dropped},
        "dpo": {"pairs": len(dpo_rows), "steps": p.dpo.max_steps, "ref_model": p.dpo.ref_model,
                "first_loss": dpo_first, "final_loss": dpo_last,
                "final_reward_margin": margin, "final_reward_accuracy": accuracy},
    }
    ctx.write_metrics("metrics/align.json", metrics)
    ctx.summary(f"SFT {len(sft_rows)} conversations from {len(mix)} mix components ({dropped} dropped by "
                f"filter_strings), loss {sft_first:.3f} -> {sft_last:.3f}; "
                f"DPO {len(dpo_rows)} pairs, loss {dpo_first:.3f} -> {dpo_last:.3f} -> {OUT}")


def main() -> None:
    with stage("align") as ctx:
        run(ctx)


if __name__ == "__main__":
    main()
