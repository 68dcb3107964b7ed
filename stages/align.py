"""align: supervised fine-tuning then DPO, with trl, on the base model.

Lucie-7B-Instruct stopped at SFT (its cards invite users to add preference tuning); we run
both so that the whole path base -> SFT -> DPO is reproducible. The chat template is
Lucie's (Llama-3 style headers, no default system prompt), rewritten with
`{% generation %}` markers so trl can compute the loss on assistant turns only; it
renders exactly the same text as Lucie's.

Input files are checked line by line before any training: a malformed line is an error
naming the file and line. trl's own reporting is off (report_to="none") and its log
history is copied to MLflow here, so the run id stays under the pipeline's control.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from . import io
from .runtime import StageContext, StageError, stage

BASE, OUT = "artifacts/models/base", "artifacts/models/instruct"

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


def load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    tok.chat_template = CHAT_TEMPLATE
    return tok


def common_args(seed: int, out: str) -> dict:
    return dict(output_dir=out, report_to="none", save_strategy="no", use_cpu=True, dataloader_num_workers=0,
                disable_tqdm=True, logging_steps=1, seed=seed, data_seed=seed)


def first_last(history: list[dict], key: str) -> tuple[float | None, float | None]:
    vals = [h[key] for h in history if key in h]
    return (vals[0], vals[-1]) if vals else (None, None)


def run(ctx: StageContext) -> None:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, GenerationConfig, PrinterCallback
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    p, seed = ctx.params.align, ctx.params.seed
    sft_rows = load_jsonl(ctx.path(p.sft.data), "sft")
    dpo_rows = load_jsonl(ctx.path(p.dpo.data), "dpo")
    torch.set_num_threads(ctx.params.pretrain.threads)
    torch.manual_seed(seed)
    tok = load_tokenizer(ctx.path(BASE))
    model = AutoModelForCausalLM.from_pretrained(str(ctx.path(BASE)), dtype=torch.float32)

    with tempfile.TemporaryDirectory() as work:
        sft = SFTTrainer(
            model=model, processing_class=tok, train_dataset=Dataset.from_list(sft_rows),
            args=SFTConfig(max_steps=p.sft.max_steps, per_device_train_batch_size=p.sft.batch_size,
                           learning_rate=p.sft.lr, max_length=p.sft.max_length, assistant_only_loss=True,
                           **common_args(seed, f"{work}/sft")),
        )
        sft.remove_callback(PrinterCallback)  # per-step dicts on stdout; the history goes to MLflow instead
        sft.train()
        sft_hist = sft.state.log_history
        dpo = DPOTrainer(
            model=sft.model, processing_class=tok, train_dataset=Dataset.from_list(dpo_rows),
            args=DPOConfig(max_steps=p.dpo.max_steps, per_device_train_batch_size=p.dpo.batch_size,
                           learning_rate=p.dpo.lr, beta=p.dpo.beta, loss_type=[p.dpo.loss_type],
                           max_length=p.dpo.max_length, **common_args(seed, f"{work}/dpo")),
        )
        dpo.remove_callback(PrinterCallback)
        dpo.train()
        dpo_hist = dpo.state.log_history
        final = dpo.model

    with io.atomic_dir(ctx.path(OUT)) as tmp:
        final.generation_config = GenerationConfig(
            bos_token_id=0, eos_token_id=[1, tok.convert_tokens_to_ids("<|eot_id|>")], pad_token_id=3,
            do_sample=True, temperature=0.6, top_p=0.9,  # Lucie's generation defaults
        )
        final.save_pretrained(str(tmp), safe_serialization=True)
        tok.save_pretrained(str(tmp))
        shutil.copy(ctx.path(BASE) / "training_state.json", tmp / "base_training_state.json")

    for prefix, hist in (("sft", sft_hist), ("dpo", dpo_hist)):
        for key in ("loss", "rewards/margins", "rewards/accuracies"):
            ctx.tracker.metric_series(f"{prefix}/{key}", [(h["step"], h[key]) for h in hist if key in h])
    sft_first, sft_last = first_last(sft_hist, "loss")
    dpo_first, dpo_last = first_last(dpo_hist, "loss")
    _, margin = first_last(dpo_hist, "rewards/margins")
    _, accuracy = first_last(dpo_hist, "rewards/accuracies")
    metrics = {
        "sft": {"examples": len(sft_rows), "steps": p.sft.max_steps, "first_loss": sft_first, "final_loss": sft_last},
        "dpo": {"pairs": len(dpo_rows), "steps": p.dpo.max_steps, "first_loss": dpo_first, "final_loss": dpo_last,
                "final_reward_margin": margin, "final_reward_accuracy": accuracy},
    }
    ctx.write_metrics("metrics/align.json", metrics)
    ctx.summary(f"SFT {len(sft_rows)} conversations, loss {sft_first:.3f} -> {sft_last:.3f}; "
                f"DPO {len(dpo_rows)} pairs, loss {dpo_first:.3f} -> {dpo_last:.3f} -> {OUT}")


def main() -> None:
    with stage("align") as ctx:
        run(ctx)


if __name__ == "__main__":
    main()
