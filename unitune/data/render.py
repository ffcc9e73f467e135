"""Canonical examples -> token ids + loss mask, with truncation counted.

A feature is `{"input_ids": [...], "mask": [...]}`; `mask[t] == 1` means token t
is a target (predicted from the tokens before it). pt trains every token of
`text` followed by EOS; sft renders `messages` with the chat template (see
unitune/templates) and trains what the template config selects.
"""

from dataclasses import dataclass, field

from unitune.errors import UnituneError
from unitune.templates import render_messages


@dataclass
class RenderReport:
    total: int = 0
    truncated: int = 0
    dropped_too_long: int = 0
    dropped_no_target: int = 0
    tokens: int = 0
    target_tokens: int = 0
    notes: list[str] = field(default_factory=list)

    def lines(self, split: str) -> list[str]:
        kept = self.total - self.dropped_too_long - self.dropped_no_target
        out = [f"{split}: {kept} of {self.total} examples kept, {self.tokens} tokens ({self.target_tokens} trained)"]
        if self.truncated:
            out.append(f"{split}: {self.truncated} examples truncated to max_length")
        if self.dropped_too_long:
            out.append(f"{split}: {self.dropped_too_long} examples longer than max_length dropped (data.truncation=drop)")
        if self.dropped_no_target:
            out.append(f"{split}: {self.dropped_no_target} examples dropped: no trained token left after truncation")
        return out


def render_example(example: dict, task: str, tokenizer, chat_template: str, loss: str, system=None) -> dict:
    if task == "pt":
        ids = tokenizer(example["text"], add_special_tokens=True)["input_ids"] + [tokenizer.eos_token_id]
        return {"input_ids": ids, "mask": [1] * len(ids)}
    messages = example["messages"]
    if system and messages[0]["role"] != "system":
        messages = [{"role": "system", "content": system}] + messages
    ids, mask = render_messages(tokenizer, messages, chat_template=chat_template, tools=example.get("tools"), loss=loss)
    return {"input_ids": ids, "mask": mask}


def render_all(examples: list[dict], task: str, tokenizer, *, chat_template: str, loss: str, max_length: int,
               truncation: str, system=None) -> tuple[list[dict], RenderReport]:
    """Render every example; truncate or drop over-length ones and count what happened."""
    if max_length < 2:
        raise UnituneError(f"data.max_length must be at least 2, got {max_length}")
    report, features = RenderReport(total=len(examples)), []
    for example in examples:
        feat = render_example(example, task, tokenizer, chat_template, loss, system)
        n = len(feat["input_ids"])
        if n > max_length:
            if truncation == "drop":
                report.dropped_too_long += 1
                continue
            cut = slice(0, max_length) if truncation == "right" else slice(n - max_length, n)
            feat = {k: v[cut] for k, v in feat.items()}
            report.truncated += 1
        if sum(feat["mask"][1:]) == 0:  # the first token is never a target
            report.dropped_no_target += 1
            continue
        report.tokens += len(feat["input_ids"])
        report.target_tokens += sum(feat["mask"][1:])
        features.append(feat)
    return features, report
