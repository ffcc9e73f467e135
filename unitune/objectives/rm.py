"""Reward modelling, Bradley-Terry (OBJECTIVES.md §4).

    r(x, y) = the scalar head's output at the last real token of x + y
    L = mean over pairs of  -log sig(r_c - r_r - m)  +  c * (r_c + r_r)^2

m is a pair's optional `margin` (0 without one); c is
rm.center_rewards_coefficient (Eisenstein et al. 2023; 0.01 is common). The model
is `AutoModelForSequenceClassification` with one label, its head trainable under
LoRA (peft's modules_to_save), and final/ is merged so that the same class
loads it directly.

The last real token is found by the attention mask, not by the pad id: a
decoder's head runs on every position (read by a forward hook) and the row's
last attended position is taken. When the tokenizer pads with its EOS (as
SmolLM2 does), the pad becomes its unk token if it has a distinct one, so that
transformers' own pooling (the rightmost non-pad token) also picks the
end-of-turn token when the saved model is used on its own. Encoder models
(BERT-style) keep their own pooling.

A batch is one forward. For a decoder it holds each pair as one row, [common prefix | rest of
chosen | rest of rejected] (`rm.shared_prompt`, as DPO's, pairs.py): the prompt both sides
repeat goes through the model once, each side sees the prefix and itself only, and each side's
reward is read at its own last token. `--rm.shared_prompt false`, encoders and flash-attention
kernels (which take no 4-D mask) use 2B rows, the B chosen then the B rejected, right-padded.
The same rewards either way (tests/objectives/test_rm.py).

Metrics: `accuracy` (r_c > r_r, strict), `margin` (mean r_c - r_r), `mean_reward`.
"""

from pathlib import Path

import torch
import torch.nn.functional as F

from unitune.data.collate import collate, takes_4d_mask
from unitune.errors import UnituneError
from unitune.objectives.head import model_mask
from unitune.objectives.pairs import FitReport, check_config, common_prefix, fit_all, pair_rows, side, split_ids
from unitune.objectives.reference import disable_dropout


def bt_loss(r_c, r_r, margin=None, center: float = 0.0) -> tuple[torch.Tensor, dict]:
    """(sum over pairs of the loss, metric sums over pairs)."""
    diff = r_c - r_r - (margin if margin is not None else 0)
    losses = -F.logsigmoid(diff)
    if center:
        losses = losses + center * (r_c + r_r) ** 2
    with torch.no_grad():
        metrics = {"accuracy": (r_c > r_r).sum(), "margin": (r_c - r_r).sum(),
                   "mean_reward": ((r_c + r_r).sum(), 2 * len(r_c))}
    return losses.sum(), metrics


def _head(model):
    """The per-position scalar head of a decoder classifier (`score`), or None (encoders)."""
    for name, module in model.named_modules():
        if name.split(".")[-1] == "score":
            return module
    return None


def _head_outputs(model, head, **inputs) -> torch.Tensor:
    """[rows, width, 1]: the decoder classifier's `head` at every position, read by a forward hook."""
    seen = []
    hook = head.register_forward_hook(lambda module, args, out: seen.append(out))
    try:
        model(**inputs)
    finally:
        hook.remove()
    return seen[-1]


def last_token_rewards(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """[B] rewards at each row's last attended position (rows right-padded)."""
    head = _head(model)
    if head is None:
        return model(input_ids=input_ids, attention_mask=attention_mask).logits[:, 0]
    scores = _head_outputs(model, head, input_ids=input_ids, attention_mask=attention_mask)
    last = attention_mask.long().sum(1) - 1
    return scores[torch.arange(len(last), device=last.device), last, 0]


def shared_rewards(model, batch: dict) -> torch.Tensor:
    """[2B] rewards of shared-prefix rows (`shared_prefix_rows`): the head's output at each side's last
    token, `reward_at` (flat index into [B * width]; the B chosen sides, then the B rejected)."""
    scores = _head_outputs(model, _head(model), input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                           attention_mask=model_mask(model, batch["attention_mask"]))
    return scores.flatten(0, 1)[batch["reward_at"], 0]


def shared_prefix_pairs(pairs: list[tuple[list[int], list[int]]], pad_id: int) -> dict:
    """One row per (chosen ids, rejected ids) pair (`pair_rows`) and `reward_at`: where each side's
    last token is, chosen sides first."""
    batch, index = pair_rows(pairs, pad_id)
    at = [index[b][k][-1] for k in (0, 1) for b in range(len(pairs))]
    return {**batch, "reward_at": torch.tensor(at, dtype=torch.long)}


def use_distinct_pad(tokenizer) -> None:
    """Pad with unk instead of EOS where that is possible (see the module docstring)."""
    if tokenizer.pad_token_id == tokenizer.eos_token_id and tokenizer.unk_token is not None \
            and tokenizer.unk_token_id != tokenizer.eos_token_id:
        tokenizer.pad_token = tokenizer.unk_token


class RMObjective:
    name = "rm"
    rows_independent = True  # the loss is a sum over pairs: a micro-batch may run in parts

    def __init__(self, cfg, tokenizer):
        check_config(cfg, self.name)
        self.cfg, self.tokenizer = cfg, tokenizer
        self.shared = cfg.rm.shared_prompt and takes_4d_mask(cfg.model.attn_implementation)
        self.saved = None  # the share of tokens the shared prompts save, once the train rows are made
        use_distinct_pad(tokenizer)

    def load_model(self, accelerator):
        model = self._load(accelerator)
        if _head(model) is None:
            self.shared = False  # an encoder sees its whole row both ways and pools it itself
        if self.shared and self.saved is not None:
            accelerator.print(f"unitune: rm: each pair's shared prompt computed once: {self.saved:.0%} fewer tokens "
                              "through the model (--rm.shared_prompt false: two rows per pair)")
        return model

    def _load(self, accelerator):
        from transformers import AutoModelForSequenceClassification
        from transformers.utils import logging

        from unitune.models.load import pick_dtype, resolve

        m = self.cfg.model
        path, extra = resolve(m.name)
        if "gguf_file" in extra:
            raise UnituneError("rm: load a Hugging Face folder or a built-in name, not a .gguf file")
        if (Path(path) / "adapter_config.json").exists() and not (Path(path) / "config.json").exists():
            return self._from_adapter(accelerator)
        kwargs = {"attn_implementation": m.attn_implementation} if m.attn_implementation else {}
        level = logging.get_verbosity()
        logging.set_verbosity_error()  # the load report lists the new head as missing; say it in one line
        try:
            model = AutoModelForSequenceClassification.from_pretrained(
                path, num_labels=1, dtype=pick_dtype(m.dtype, accelerator.device.type),
                trust_remote_code=m.trust_remote_code, **kwargs)
        except (OSError, ValueError) as err:
            raise UnituneError(f"rm: cannot load {m.name} as a sequence classifier: {err}") from None
        finally:
            logging.set_verbosity(level)
        accelerator.print(f"unitune: rm: {type(model).__name__}, a one-output head on {m.name} "
                          "(newly initialised unless the model is a reward model already)")
        model.config.pad_token_id = self.tokenizer.pad_token_id
        return model

    def _from_adapter(self, accelerator):
        """A LoRA run's final/ (e.g. after SFT): its merged causal LM's backbone under a new score head."""
        from transformers import AutoModelForSequenceClassification

        from unitune.models.load import load_model

        m = self.cfg.model
        causal = load_model(m.name, dtype=m.dtype, device_type=accelerator.device.type,
                            attn_implementation=m.attn_implementation, trust_remote_code=m.trust_remote_code)
        causal.config.num_labels = 1
        model = AutoModelForSequenceClassification.from_config(causal.config, dtype=causal.dtype)
        getattr(model, model.base_model_prefix).load_state_dict(getattr(causal, causal.base_model_prefix).state_dict())
        model.config.pad_token_id = self.tokenizer.pad_token_id
        return model

    def prepare(self, model, accelerator, rows, val_rows) -> None:
        disable_dropout(model)

    def rows(self, examples: list[dict], split: str) -> tuple[list, list[str]]:
        data, report, rows = self.cfg.data, FitReport("pairs"), []
        for ex in examples:
            sides = [side(*split_ids(self.tokenizer, ex["prompt"], ex[key], self.tokenizer.chat_template,
                                     self.cfg.template.system)) for key in ("chosen", "rejected")]
            fitted = fit_all(report, sides, data.max_length, data.truncation)
            if fitted:
                rows.append({"chosen": fitted[0], "rejected": fitted[1], "margin": ex.get("margin", 0.0)})
        if split == "train" and rows:  # said once the model is loaded: an encoder does not share
            self.saved = sum(common_prefix(r["chosen"]["input_ids"], r["rejected"]["input_ids"]) for r in rows) \
                / sum(self.length(r) for r in rows)
        return rows, report.lines(split)

    @staticmethod
    def length(row) -> int:
        return len(row["chosen"]["input_ids"]) + len(row["rejected"]["input_ids"])

    def collate(self, rows):
        margin = torch.tensor([r["margin"] for r in rows])
        num_tokens = torch.tensor(sum(self.length(r) for r in rows))  # both sides in full, as two rows would
        if self.shared:
            batch = shared_prefix_pairs([(r["chosen"]["input_ids"], r["rejected"]["input_ids"]) for r in rows],
                                        self.tokenizer.pad_token_id)
            return {**batch, "num_tokens": num_tokens, "margin": margin}
        batch = collate([[r["chosen"]] for r in rows] + [[r["rejected"]] for r in rows], self.tokenizer.pad_token_id)
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
                "num_tokens": num_tokens, "margin": margin}

    @staticmethod
    def count(batch) -> int:
        """Pairs: a shared row is one pair, else two rows are."""
        return batch["input_ids"].shape[0] // (1 if "reward_at" in batch else 2)

    def loss(self, model, batch):
        if "reward_at" in batch:
            rewards = shared_rewards(model, batch)
        else:
            rewards = last_token_rewards(model, batch["input_ids"], batch["attention_mask"])
        r_c, r_r = rewards.float().chunk(2)
        return bt_loss(r_c, r_r, batch["margin"].to(r_c.dtype), self.cfg.rm.center_rewards_coefficient)
