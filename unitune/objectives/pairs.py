"""What the preference objectives (dpo, kto, rm) share: rendering a prompt with one
completion, fitting it into max_length, and summed completion log-probs.

A side is `{"input_ids": prompt ids + completion ids, "mask": 0 on the prompt,
1 on the completion}`. The completion is the last assistant turn as the chat
template renders it, up to and including its end-of-turn marker (found by
`render_messages`' prefix rendering, so the split is exact for any template);
anything the template puts after it (a newline) is cut.

DPO's batch holds each pair as one row, [common prefix | rest of chosen | rest of
rejected] (`shared_prefix_collate`): the prompt, which both sides repeat, goes through
the model once, and each side's tokens are scored from the hidden states that predict
them (`unitune/data/collate.py`). The same sums as two separate rows
(tests/objectives/test_pairs.py).

Truncation follows `data.truncation`: `right` keeps the start (TRL's keep_start;
the completion loses its end), `left` keeps the end (the prompt loses its
start), `drop` drops the example. A side left without a completion token is
dropped and counted: it would train as log-prob 0.
"""

from dataclasses import dataclass

import torch

from unitune.data.collate import IGNORE, shared_prefix_rows
from unitune.errors import UnituneError
from unitune.objectives.head import final_hidden, output_head, token_logps
from unitune.templates import render_messages


def check_config(cfg, verb: str) -> None:
    if cfg.data.packing:
        raise UnituneError(f"data.packing: {verb} trains on whole prompt + completion rows, which are not packed "
                           "(drop --data.packing)")


def split_ids(tokenizer, prompt: list[dict], completion: dict, chat_template: str,
              system: str | None = None) -> tuple[list[int], list[int]]:
    """(prompt ids, completion ids) of the conversation prompt + [completion]."""
    if system and prompt[0]["role"] != "system":
        prompt = [{"role": "system", "content": system}] + prompt
    ids, mask = render_messages(tokenizer, prompt + [completion], chat_template=chat_template, loss="last")
    on = [i for i, m in enumerate(mask) if m]
    if not on:
        raise UnituneError(f"the chat template renders no token for the completion {completion['content'][:60]!r}")
    return ids[:on[0]], ids[on[0]:on[-1] + 1]


def side(prompt_ids: list[int], completion_ids: list[int]) -> dict:
    return {"input_ids": prompt_ids + completion_ids, "mask": [0] * len(prompt_ids) + [1] * len(completion_ids)}


@dataclass
class FitReport:
    """Counts of what truncation did, in units ('pairs' or 'examples')."""
    unit: str
    total: int = 0
    truncated: int = 0
    dropped_long: int = 0
    dropped_no_completion: int = 0

    def fit(self, feat: dict, max_length: int, truncation: str) -> dict | None:
        """`feat` cut to max_length, or None (then count it with `drop`)."""
        n = len(feat["input_ids"])
        if n > max_length:
            if truncation == "drop":
                return None
            cut = slice(0, max_length) if truncation == "right" else slice(n - max_length, n)
            feat = {k: v[cut] for k, v in feat.items()}
        if sum(feat["mask"][1:]) == 0:  # the first token is never a target
            return None
        return feat

    def lines(self, split: str) -> list[str]:
        dropped = self.dropped_long + self.dropped_no_completion
        out = [f"{split}: {self.total - dropped} of {self.total} {self.unit} kept"]
        if self.truncated:
            out.append(f"{split}: {self.truncated} {self.unit} truncated to max_length")
        if self.dropped_long:
            out.append(f"{split}: {self.dropped_long} {self.unit} longer than max_length dropped")
        if self.dropped_no_completion:
            out.append(f"{split}: {self.dropped_no_completion} {self.unit} dropped: the prompt leaves no "
                       "completion token within max_length (raise data.max_length or use data.truncation left)")
        return out


def fit_all(report: FitReport, sides: list[dict], max_length: int, truncation: str) -> list[dict] | None:
    """Fit every side of one example; None (counted) if any side does not survive."""
    report.total += 1
    if max_length < 2:
        raise UnituneError(f"data.max_length must be at least 2, got {max_length}")
    fitted = [report.fit(s, max_length, truncation) for s in sides]
    if any(f is None for f in fitted):
        too_long = any(len(s["input_ids"]) > max_length for s in sides) and truncation == "drop"
        if too_long:
            report.dropped_long += 1
        else:
            report.dropped_no_completion += 1
        return None
    if any(len(s["input_ids"]) > max_length for s in sides):
        report.truncated += 1
    return fitted


def sequence_logps(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sequence: (sum of the log-probs of its target tokens, how many there are). A sequence
    is a row, or one side of a shared-prefix row (then chosen sides first, as two rows would be).
    The LM head runs only at target positions (unitune/objectives/head.py)."""
    hidden = final_hidden(model, batch)
    if "score_at" in batch:
        targets, slot, n = batch["score_targets"], batch["score_slot"], 2 * hidden.shape[0]
        hidden = hidden.flatten(0, 1)[batch["score_at"]]
    else:
        keep = batch["targets"] != IGNORE
        targets, n = batch["targets"][keep], keep.shape[0]
        slot = torch.arange(n, device=keep.device)[:, None].expand_as(keep)[keep]
        hidden = hidden[keep]
    logps, _ = token_logps(output_head(model), hidden, targets)
    sums = torch.zeros(n, dtype=logps.dtype, device=logps.device).index_add(0, slot, logps)
    counts = torch.zeros(n, dtype=torch.long, device=slot.device).index_add(0, slot, torch.ones_like(slot))
    return sums, counts


def common_prefix(a: list[int], b: list[int]) -> int:
    """Length of the shared start of two sides, leaving each at least one token of its own."""
    n = 0
    for x, y in zip(a[:min(len(a), len(b)) - 1], b):
        if x != y:
            break
        n += 1
    return n


def pair_rows(pairs: list[tuple[list[int], list[int]]], pad_id: int) -> tuple[dict, list[list[int]]]:
    """`shared_prefix_rows` of (chosen ids, rejected ids) pairs: one row per pair, [common prefix | rest of
    chosen | rest of rejected], and `index[b][k]`, the flat positions of pair b's side k (0 chosen)."""
    prefix = [common_prefix(c, r) for c, r in pairs]
    return shared_prefix_rows([(c[:p], [c[p:], r[p:]]) for (c, r), p in zip(pairs, prefix)], pad_id)


def shared_prefix_collate(pairs: list[tuple[dict, dict]], pad_id: int) -> dict:
    """One row per (chosen, rejected) pair: [common prefix | rest of chosen | rest of rejected]
    (`shared_prefix_rows`). A side's token t is scored from the state of its token t-1, so at the
    prefix's end one state scores both sides' next tokens: `score_at` (flat index into
    [B * width]), `score_targets`, `score_slot` (pair b's chosen side is b, its rejected side
    B + b). `num_tokens` counts both sides in full, as two rows would: the tokens trained on,
    not the ones computed."""
    B = len(pairs)
    batch, index = pair_rows([(c["input_ids"], r["input_ids"]) for c, r in pairs], pad_id)
    at, targets, slot = [], [], []
    for b, sides in enumerate(pairs):
        for k, feat in enumerate(sides):
            for t in range(1, len(feat["input_ids"])):
                if feat["mask"][t]:
                    at.append(index[b][k][t - 1])
                    targets.append(feat["input_ids"][t])
                    slot.append(k * B + b)
    return {**batch, "score_at": torch.tensor(at, dtype=torch.long),
            "score_targets": torch.tensor(targets, dtype=torch.long), "score_slot": torch.tensor(slot, dtype=torch.long),
            "num_tokens": torch.tensor(sum(len(c["input_ids"]) + len(r["input_ids"]) for c, r in pairs))}


def stack_ref(rows: list[dict]) -> dict:
    """The precomputed reference log-probs of a micro-batch, when its rows carry them."""
    if rows and all("ref" in r for r in rows):
        return {"ref": torch.tensor([r["ref"] for r in rows], dtype=torch.float32)}
    return {}
