"""The training report of `lmpc train` as Markdown, for a writer to read (the JSON beside it has it all)."""

from __future__ import annotations

from .hygiene import REASONS

SOURCE_NAMES = {"sheet": "sheet examples (hand-written)", "writer": "dialogue file (hand-written)",
                "knowledge": "knowledge drills (hand-written)", "generated": "generated"}


def markdown_report(report: dict) -> str:
    data = report["data"]
    hygiene = data["hygiene"]
    generator = report["generator"] or "none (hand-written data only)"
    lines = [f"# Training report: {report['character']}", "",
             f"Base model: `{report['base']}`. Generator: {generator}.",
             "", "## Data", "", "| source | dialogues | exchanges | kept dialogues | kept exchanges |",
             "|---|---:|---:|---:|---:|"]
    for source, title in SOURCE_NAMES.items():
        if source in data["dialogues"]:
            lines.append(f"| {title} | {data['dialogues'][source]} | {data['exchanges'][source]} | "
                         f"{data['kept_dialogues'].get(source, 0)} | "
                         f"{data['kept_exchanges'].get(source, 0)} |")
    lines += ["", f"Samples: {data['samples']} ({data['with_memory_note']} with a memory note, "
                  f"{data['too_long']} left out as too long): {data['train_samples']} for training, "
                  f"{data['held_out_samples']} held out. Generated or drilled dialogues cut short at their first bad "
                  f"exchange: {hygiene['truncated']}."]
    if hygiene["dropped"]:
        lines += ["", "### Dropped generated or drilled dialogues", "",
                  "| reason | dialogues | what it means | example |", "|---|---:|---|---|"]
        for reason, count in sorted(hygiene["dropped"].items(), key=lambda kv: -kv[1]):
            example = (hygiene["examples"].get(reason) or [""])[0].replace("|", "/").replace("\n", " ")
            lines.append(f"| {reason} | {count} | {REASONS.get(reason, '')} | {example[:140]} |")
    if hygiene["warnings"]:
        lines += ["", "### Hand-written lines that fail a check (kept)", ""]
        lines += [f"- {w}" for w in hygiene["warnings"]]
    if "coverage" in report:
        counts = report["coverage"]
        thin = sorted((n, ref) for ref, n in counts.items() if n < 3)
        lines += ["", "## Coverage", "",
                  f"Kept exchanges stating each of the sheet's {len(counts)} statements: least "
                  f"{min(counts.values(), default=0)}, median {sorted(counts.values())[len(counts) // 2] if counts else 0}."
                  + (" Fewer than three: " + ", ".join(f"{ref} ({n})" for n, ref in thin) + "." if thin else
                     " Every statement has at least three."), "",
                  "| statement | exchanges |", "|---|---:|"]
        lines += [f"| {ref} | {n} |" for ref, n in counts.items()]
    training = report.get("training")
    if training:
        cfg = training["config"]
        layers = f" on the last {cfg['lora_layers']} layers" if cfg.get("lora_layers") else ""
        method = "full fine-tune" if training["kind"] == "full" else (
            f"LoRA r={cfg['lora_rank']}{layers}, alpha {cfg['lora_alpha']}, dropout {cfg['lora_dropout']}")
        lines += ["", "## Training", "",
                  f"{method}; learning rate {cfg['learning_rate']}, batch {cfg['batch_size']}, "
                  f"{training['steps']} steps on {training['device']}, "
                  f"{training['seconds'] / 60:.1f} min"
                  + (f" (this run, resumed from {training['resumed_from']})" if training.get("resumed_from") else "")
                  + "." + (f" The LoRA began from the adapter {training['started_from']}, not from zero; epoch "
                           "0 is that adapter." if training.get("started_from") else ""), "",
                  "| epoch | training loss | held-out loss |", "|---:|---:|---:|"]
        tested = {e["epoch"]: e for e in training.get("persona_test", [])}
        if tested:
            lines[-2:] = ["| epoch | training loss | held-out loss | persona test (greedy) | invented names |",
                          "|---:|---:|---:|---:|---:|"]
        for e in training["epochs"]:
            mark = " (kept)" if e["epoch"] == training["best_epoch"] else ""
            train_loss = "–" if e["train_loss"] is None else f"{e['train_loss']:.4f}"
            row = f"| {e['epoch']}{mark} | {train_loss} | {e['eval_loss']:.4f} |"
            if tested:
                t = tested.get(e["epoch"])
                row += f" {t['key_facts']:.1%} | {t['invented_name']:.0%} |" if t else " – | – |"
            lines.append(row)
    lines += ["", "## Time", "", ", ".join(f"{k} {v:.0f} s" for k, v in report["seconds"].items()), ""]
    return "\n".join(lines)
