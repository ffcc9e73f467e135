"""What a run leaves behind besides metrics: final/ and a short run card."""

import hashlib
import json
from pathlib import Path

from unitune.config import to_yaml


def save_final(model, tokenizer, path: Path, merge: bool) -> None:
    """final/: merged weights (or the plain model), or a peft adapter folder naming its base;
    always with the tokenizer and the chat template that was trained on."""
    from peft import PeftModel

    if isinstance(model, PeftModel) and merge:
        model = model.merge_and_unload()
    if getattr(model.config, "use_cache", None) is False:
        model.config.use_cache = True  # off only while training (models/lora.py); generation from final/ wants it
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)


def _auto_class(final: Path) -> str:
    """The transformers Auto class that loads final/ (a reward model is a sequence classifier)."""
    config = final / "config.json"
    if config.exists() and any("SequenceClassification" in a for a in json.loads(config.read_text()).get(
            "architectures") or []):
        return "AutoModelForSequenceClassification"
    return "AutoModelForCausalLM"


def write_run_card(out: Path, verb: str, cfg, notes: list[str], metrics: dict, fingerprints: dict,
                   seconds: float) -> None:
    shown = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    lines = [
        f"# unitune {verb} run",
        "",
        f"Model `{cfg.model.name}`, {'LoRA r=%d' % cfg.lora.r if cfg.lora.enabled else 'full fine-tuning'}, "
        f"{seconds:.0f} s. `final/` loads with `transformers.{_auto_class(out / 'final')}.from_pretrained`.",
        "",
        "## Data",
        "",
        *[f"- {line}" for line in notes],
        *[f"- {split} fingerprint (content hash): `{h}`" for split, h in fingerprints.items()],
        "",
        "## Final metrics",
        "",
        "| metric | value |",
        "|---|---|",
        *[f"| {k} | {v:.6g} |" for k, v in shown.items()],
        "",
        "![loss](loss.png)" if (out / "loss.png").exists() else "",
        "",
        "## Config",
        "",
        "```yaml",
        to_yaml(cfg).rstrip(),
        "```",
        "",
    ]
    (out / "README.md").write_text("\n".join(lines))


def fingerprint(examples: list[dict]) -> str:
    """A content hash of canonical examples (order included)."""
    h = hashlib.sha256()
    for ex in examples:
        h.update(json.dumps(ex, sort_keys=True, ensure_ascii=False).encode())
    return h.hexdigest()[:16]
