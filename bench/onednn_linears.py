"""fp32 linear layers through oneDNN instead of MKL in a training pass: SmolLM2-135M with LoRA (r=8, all
linear layers), one forward + backward of the decoder, every mode in one process, alternating.

    .venv/bin/python bench/onednn_linears.py [MODES] [TOKENS]     (defaults: plain,base,all 250; 4 rows)

Modes: `plain` (every linear as it is: `F.linear`, MKL's GEMM on CPU), `base` (the frozen base linears
through oneDNN), `lora` (the adapters' rank-8 products through oneDNN), `all` (both). Through oneDNN
means an autograd function whose output and input gradient are `torch.ops.mkldnn._linear_pointwise`
(the plain weight, not pre-packed) and whose weight gradient stays MKL's `mm`. Prints each mode's
median time (after two passes) and its gradients' largest difference from the first mode's.
"""

import statistics
import sys
import time
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LINEAR = torch.ops.mkldnn._linear_pointwise


class OneDNNLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight):
        ctx.save_for_backward(x, weight)
        return LINEAR(x, weight, None, "none", [], "")

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        gx = LINEAR(grad, weight.t(), None, "none", [], "") if ctx.needs_input_grad[0] else None
        gw = None
        if ctx.needs_input_grad[1]:
            gw = grad.reshape(-1, grad.shape[-1]).t() @ x.reshape(-1, x.shape[-1])
        return gx, gw


def main() -> None:
    from unitune.config import LoraConfig, TrainConfig
    from unitune.models.load import load_model
    from unitune.models.lora import prepare_for_training
    from unitune.train.allocator import cpu_allocator

    modes = (sys.argv[1] if len(sys.argv) > 1 else "plain,base,all").split(",")
    tokens = int(sys.argv[2]) if len(sys.argv) > 2 else 250
    current = {"mode": modes[0]}

    def forward_for(kind):
        def forward(self, x):
            if self.bias is None and current["mode"] in ("all", kind):
                return OneDNNLinear.apply(x, self.weight)
            return torch.nn.functional.linear(x, self.weight, self.bias)
        return forward

    torch.manual_seed(0)
    model = prepare_for_training(load_model("smollm2-135m-instruct"), LoraConfig(enabled=True, r=8, alpha=16),
                                 TrainConfig())
    for name, module in model.named_modules():
        if type(module) is torch.nn.Linear and ".layers." in name:
            if "lora_" in name:
                module.forward = types.MethodType(forward_for("lora"), module)
            else:  # the base layer's own forward, under unitune's recompute wrapper
                module._unitune_forward = types.MethodType(forward_for("base"), module)
    model.train()
    body = model.get_base_model().model
    ids = torch.randint(0, 40000, (4, tokens))
    times, grads = {m: [] for m in modes}, {}
    with cpu_allocator("keep", device_type="cpu", full_finetune=False):
        for i in range(8):
            for mode in (modes if i % 2 else modes[::-1]):
                current["mode"] = mode
                began = time.perf_counter()
                body(ids).last_hidden_state.pow(2).mean().backward()
                times[mode].append(time.perf_counter() - began)
                if i == 0:
                    grads[mode] = [p.grad.clone() for p in model.parameters() if p.grad is not None]
                model.zero_grad(set_to_none=True)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, 4 rows x {tokens} tokens, fp32 LoRA r=8")
    for mode in modes:
        diff = max(((a - b).abs().max() / b.abs().max().clamp(min=1e-12)).item()
                   for a, b in zip(grads[mode], grads[modes[0]]))
        print(f"  {mode:6s} median {statistics.median(times[mode][2:]):.3f} s, gradients within {diff:.1e} of "
              f"{modes[0]}'s largest  ({', '.join(f'{t:.2f}' for t in times[mode])})")


if __name__ == "__main__":
    main()
