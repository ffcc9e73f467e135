"""Pre-packed linear layers (unitune/models/prepack.py): the same products as the plain layers, the
plain weights freed except where another module shares them, and only plain nn.Linear layers packed."""

import pytest
import torch

from unitune.models.load import load_model
from unitune.models.prepack import Prepacked, can_prepack, pack_linears

pytestmark = pytest.mark.skipif(not can_prepack(torch.float32, torch.device("cpu")),
                                reason="this torch has no oneDNN packed linears")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_packed_model_gives_the_plain_logits(dtype):
    if not can_prepack(dtype, torch.device("cpu")):
        pytest.skip(f"no packed kernels for {dtype}")
    torch.manual_seed(0)
    model = load_model("tiny-llama").to(dtype).eval()
    ids = torch.randint(0, 1000, (3, 17))  # 51 rows: not the 16 the weights are laid out for
    with torch.inference_mode():
        want = model(ids).logits.float()
        linears = [m for m in model.modules() if type(m) is torch.nn.Linear]
        assert pack_linears(model) == len(linears) > 0
        got = model(ids).logits.float()
        one = model(ids[:1, :1]).logits.float()  # one row, as in decoding
    tol = dict(atol=1e-4, rtol=1e-4) if dtype == torch.float32 else dict(atol=5e-2, rtol=2e-2)
    torch.testing.assert_close(got, want, **tol)
    torch.testing.assert_close(one[0, 0], want[0, 0], **tol)
    # the tied head shares the embedding's weight and keeps it; every other plain weight is freed
    kept = [m for m in linears if m.weight.numel()]
    assert kept == [model.lm_head] and model.lm_head.weight is model.get_input_embeddings().weight
    assert all(m.unitune_packed is not None for m in linears)


def test_lora_layers_and_linear_subclasses_stay_plain():
    from peft import LoraConfig, get_peft_model

    class Quantised(torch.nn.Linear):  # stands for bitsandbytes' Linear4bit, a subclass with its own forward
        pass

    model = get_peft_model(load_model("tiny-llama"), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    model.base_model.model.model.layers[0].mlp.up_proj = Quantised(64, 128, bias=False)
    packed = Prepacked(model)
    names = {id(m): n for n, m in model.named_modules()}
    assert packed.linears and all(".lora_" not in names[id(m)] for m in packed.linears)
    assert all(type(m) is torch.nn.Linear for m in packed.linears)
    assert any(names[id(m)].endswith("q_proj.base_layer") for m in packed.linears)
