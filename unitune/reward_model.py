"""Scoring (prompt, response) pairs with a trained reward model, from Python and the CLI.

    rm = unitune.RewardModel("runs/rm/final")
    rm.score(["What is 2+2?"], ["4."])                 # -> [float]
    unitune.rm_score("runs/rm/final", prompts, responses)

A prompt is a string (one user turn) or a list of messages; a response is a
string or an assistant message. They are rendered with the chat template
saved in the model folder and scored exactly as in training: the head's
output at the last token of the assistant turn. `RewardModel` is also a
reward function with the signature later stages use,
`rm(prompts, completions, **columns) -> list[float]`.

    unitune rm score --model runs/rm/final --data rows.jsonl [--output scored.jsonl]
    unitune rm score --model runs/rm/final --prompt "Hi" --response "Hello!"

Rows are (prompt, completion | response) or messages (the last turn is
scored); preference rows (chosen/rejected, rejected_response) get both
scores and the command prints the accuracy.
"""

import json
import sys

import torch

from unitune.errors import UnituneError


def _prompt(p) -> list[dict]:
    return [{"role": "user", "content": p}] if isinstance(p, str) else list(p)


def _answer(r) -> dict:
    if isinstance(r, str):
        return {"role": "assistant", "content": r}
    if isinstance(r, list):  # a one-message completion list, as TRL's conversational rows have
        r = r[-1]
    return r


class RewardModel:
    def __init__(self, path: str, *, device: str | None = None, batch_size: int = 8, max_length: int = 4096):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from unitune.models.load import resolve

        folder, _ = resolve(path)
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = AutoModelForSequenceClassification.from_pretrained(folder).to(self.device).eval()
        if self.model.config.num_labels != 1:
            raise UnituneError(f"{path}: a reward model has one output, this one has {self.model.config.num_labels}")
        self.batch_size, self.max_length = batch_size, max_length

    def _ids(self, prompt, response) -> list[int]:
        from unitune.objectives.pairs import split_ids
        from unitune.templates import resolve_chat_template

        template = resolve_chat_template(self.tokenizer)
        p, c = split_ids(self.tokenizer, _prompt(prompt), _answer(response), template)
        return (p + c)[-self.max_length:]

    @torch.no_grad()
    def score(self, prompts, responses) -> list[float]:
        from unitune.data.collate import collate
        from unitune.objectives.rm import last_token_rewards

        if len(prompts) != len(responses):
            raise UnituneError(f"{len(prompts)} prompts but {len(responses)} responses")
        ids = [self._ids(p, r) for p, r in zip(prompts, responses)]
        out = []
        for k in range(0, len(ids), self.batch_size):
            feats = [[{"input_ids": x, "mask": [0] * len(x)}] for x in ids[k:k + self.batch_size]]
            batch = collate(feats, self.tokenizer.pad_token_id)
            rewards = last_token_rewards(self.model, batch["input_ids"].to(self.device),
                                         batch["attention_mask"].to(self.device))
            out += rewards.float().cpu().tolist()
        return out

    def __call__(self, prompts, completions, **columns) -> list[float]:
        return self.score(prompts, completions)


def rm_score(model, prompts, responses, **kwargs) -> list[float]:
    """Scores from a reward-model folder (or a loaded RewardModel)."""
    rm = model if isinstance(model, RewardModel) else RewardModel(model, **kwargs)
    return rm.score(prompts, responses)


USAGE = """usage: unitune rm score --model DIR --data rows.jsonl [--output scored.jsonl] [--batch_size N]
       unitune rm score --model DIR --prompt TEXT --response TEXT"""


def cli_score(argv: list[str]) -> int:
    args = _flags(argv)
    if "help" in args:
        print(USAGE)
        return 0
    if "model" not in args or not ("data" in args or "prompt" in args):
        raise UnituneError(f"rm score needs --model and --data (or --prompt and --response)\n{USAGE}")
    rm = RewardModel(args["model"], batch_size=int(args.get("batch_size", 8)))
    if "prompt" in args:
        print(f"{rm.score([args['prompt']], [args.get('response', '')])[0]:.6f}")
        return 0
    from unitune.data import load_source
    from unitune.data.convert import BadRow, convert_row

    rows = load_source(args["data"], seed=0, columns={})
    paired = any(k in rows[0].data for k in ("chosen", "rejected_response"))
    prompts, answers = [], []
    for row in rows:
        try:
            ex = convert_row(row.data, "dpo") if paired else _unpaired(row.data)
        except BadRow as err:
            raise UnituneError(f"{row.source}: {err}") from None
        for key in (("chosen", "rejected") if paired else ("completion",)):
            prompts.append(ex["prompt"])
            answers.append(ex[key])
    scores = rm.score(prompts, answers)
    out = open(args["output"], "w") if "output" in args else sys.stdout
    step = 2 if paired else 1
    for i, row in enumerate(rows):
        extra = ({"reward_chosen": scores[2 * i], "reward_rejected": scores[2 * i + 1]} if paired
                 else {"reward": scores[i]})
        out.write(json.dumps({**row.data, **extra}, ensure_ascii=False) + "\n")
    if out is not sys.stdout:
        out.close()
    if paired:
        right = sum(scores[k] > scores[k + 1] for k in range(0, len(scores), step))
        print(f"unitune: accuracy {right / len(rows):.4f} ({right} of {len(rows)} pairs)", file=sys.stderr)
    return 0


def _unpaired(data: dict) -> dict:
    from unitune.data.convert import _sft_messages

    if "messages" in data:
        messages = _sft_messages(data)["messages"]
        return {"prompt": messages[:-1], "completion": messages[-1]}
    response = data.get("completion", data.get("response"))
    if "prompt" not in data or response is None:
        from unitune.data.convert import BadRow

        raise BadRow(None, f"expected prompt + completion (or response), or messages; got keys {sorted(data)}")
    return {"prompt": _prompt(data["prompt"]), "completion": _answer(response)}


def _flags(argv: list[str]) -> dict:
    args, key = {}, None
    for word in argv:
        if word in ("-h", "--help"):
            args["help"] = True
        elif word.startswith("--"):
            key = word[2:]
            args[key] = ""
        elif key is not None:
            args[key] = f"{args[key]} {word}".strip()
        else:
            raise UnituneError(f"unexpected argument '{word}'\n{USAGE}")
    return args
