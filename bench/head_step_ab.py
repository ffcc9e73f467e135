"""The LM loss's two ways through a trained head inside a whole full fine-tuning pass, in one process,
alternated (ABBA...): forward + backward of SmolLM2-135M (transformers' own model, fp32, torch's default
threads) on 4 rows of the suite's lengths with the second half of each row as targets, the loss through
`token_logps` (per token: logits again in backward) or `token_nll_sum` (gradients made in forward).

    .venv/bin/python bench/head_step_ab.py
"""
import statistics
import sys
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])
from unitune.malloc import preload  # noqa: E402

preload()
import torch  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

from unitune.models.registry import ensure_builtin  # noqa: E402
from unitune.objectives.head import token_logps, token_nll_sum  # noqa: E402

torch.manual_seed(0)
model = AutoModelForCausalLM.from_pretrained(ensure_builtin("smollm2-135m-instruct"), torch_dtype=torch.float32)
model.train()
lengths = [262, 240, 215, 190]
ids = torch.randint(0, 49152, (4, max(lengths)))
targets = ids.roll(-1, 1)
keep = torch.zeros_like(ids, dtype=torch.bool)
for i, n in enumerate(lengths):
    keep[i, n // 2:n - 1] = True
n_t = int(keep.sum())
head = model.get_output_embeddings()
ways = {"per-token": lambda h, y: -token_logps(head, h, y)[0].sum(), "summed": lambda h, y: token_nll_sum(head, h, y)[0]}


def step(fn):
    t = time.perf_counter()
    hidden = model.model(input_ids=ids).last_hidden_state
    (fn(hidden[keep], targets[keep]) / n_t).backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - t


for fn in ways.values():
    step(fn)
times = {k: [] for k in ways}
for r in range(6):
    for k in (list(ways) if r % 2 == 0 else list(ways)[::-1]):
        times[k].append(step(ways[k]))
print(f"{n_t} target rows of {sum(lengths)} tokens; s per forward+backward, alternated 6x:")
for k, v in times.items():
    print(f"  {k}: median {statistics.median(v):.3f}  ({', '.join(f'{x:.2f}' for x in v)})")
