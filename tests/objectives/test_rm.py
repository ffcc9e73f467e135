"""OBJECTIVES.md §6, reward-model vectors to 1e-6 with metrics, and the reward read at the last real token by
the attention mask -- also when the sequence ends in a token equal to the pad id."""

import pytest
import torch

from unitune.objectives.rm import bt_loss, last_token_rewards, use_distinct_pad

R_C, R_R = torch.tensor([1.2, 0.3, -0.5], dtype=torch.float64), torch.tensor([0.4, 0.9, -1.0], dtype=torch.float64)


@pytest.mark.parametrize("margin,center,expected", [
    (None, 0.0, 0.6275552002),
    (torch.tensor([0.5, 0.0, 1.0], dtype=torch.float64), 0.0, 0.8553067264),
    (None, 0.01, 0.6483885335),
])
def test_bradley_terry_vectors(margin, center, expected):
    total, metrics = bt_loss(R_C, R_R, margin, center)
    assert float(total) / 3 == pytest.approx(expected, abs=1e-6)


def test_metrics():
    _, m = bt_loss(R_C, R_R)
    assert float(m["accuracy"]) / 3 == pytest.approx(2 / 3)
    assert float(m["margin"]) / 3 == pytest.approx(0.2333333, abs=1e-6)
    assert float(m["mean_reward"][0]) / m["mean_reward"][1] == pytest.approx(float(torch.cat([R_C, R_R]).mean()))


class Scorer(torch.nn.Module):
    """A decoder classifier stub: `score` runs on every position; the pooled output is deliberately wrong."""

    def __init__(self):
        super().__init__()
        self.score = torch.nn.Linear(1, 1, bias=False)
        self.score.weight.data.fill_(1.0)

    def forward(self, input_ids, attention_mask=None):
        per_position = self.score(input_ids[..., None].float())  # reward = the token id at that position
        return type("Out", (), {"logits": per_position[:, 0]})()


def test_reward_at_last_attended_token_even_when_it_equals_pad():
    pad = 2
    ids = torch.tensor([[5, 6, 2, pad, pad], [7, 8, 9, 3, 2]])  # row 0 ends in a real token equal to pad
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    assert last_token_rewards(Scorer(), ids, mask).tolist() == [2.0, 2.0]
    mask[1, 4] = 0
    assert last_token_rewards(Scorer(), ids, mask).tolist() == [2.0, 3.0]


def test_pad_moves_off_eos(tokenizer):
    import copy

    tok = copy.deepcopy(tokenizer)
    assert tok.pad_token_id == tok.eos_token_id
    use_distinct_pad(tok)
    assert tok.pad_token_id == tok.unk_token_id != tok.eos_token_id


def test_encoder_backbone_trains_under_lora(tmp_path, tokenizer):
    """A BERT-style cross-encoder keeps its own pooling; its classifier head trains under LoRA."""
    from accelerate import Accelerator
    from transformers import BertConfig, BertForSequenceClassification

    from unitune.config import build
    from unitune.models.lora import prepare_for_training
    from unitune.objectives.rm import RMObjective

    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=256, num_labels=1)
    BertForSequenceClassification(config).save_pretrained(tmp_path / "bert")
    tokenizer.save_pretrained(tmp_path / "bert")
    cfg = build([("", {"model.name": str(tmp_path / "bert"), "data.packing": False})])
    objective = RMObjective(cfg, tokenizer)
    model = prepare_for_training(objective.load_model(Accelerator(cpu=True)), cfg.lora, cfg.train)
    pair = {"prompt": [{"role": "user", "content": "hi"}], "chosen": {"role": "assistant", "content": "hello"},
            "rejected": {"role": "assistant", "content": "go away"}}
    rows, _ = objective.rows([pair, pair], "train")
    assert objective.count(objective.collate(rows)) == 2 and "reward_at" not in objective.collate(rows)  # whole rows
    loss, metrics = objective.loss(model, objective.collate(rows))
    loss.backward()
    head = [p for n, p in model.named_parameters() if "classifier" in n and p.requires_grad]
    assert head and all(p.grad is not None for p in head) and float(metrics["accuracy"]) in (0.0, 2.0)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_shared_prompt_rows_give_the_rewards_loss_and_gradients_of_two_rows(tokenizer, attention, capsys):
    """`rm.shared_prompt`: one row per pair, [prompt | rest of chosen | rest of rejected], reads each side's
    reward where two rows would (eager attention takes the 4-D mask as an additive one)."""
    from accelerate import Accelerator

    from unitune.config import build
    from unitune.objectives.rm import RMObjective

    def pair(prompt, chosen, rejected):
        return {"prompt": [{"role": "user", "content": prompt}], "chosen": {"role": "assistant", "content": chosen},
                "rejected": {"role": "assistant", "content": rejected}, "margin": 0.5}

    pairs = [pair("What is two plus two?", "Four.", "It is five, I think, or maybe six."),
             pair("Name a colour.", "Blue is a colour that many people like.", "No."),
             pair("Say hi in a long and friendly way please", "Hi there, friend!", "Hi there, enemy!")]
    out = []
    for shared in (True, False):
        cfg = build([("", {"model.name": "tiny-llama", "data.packing": False, "rm.shared_prompt": shared,
                           "model.attn_implementation": attention, "rm.center_rewards_coefficient": 0.01})])
        objective = RMObjective(cfg, tokenizer)
        rows, _ = objective.rows(pairs, "train")
        torch.manual_seed(0)
        model = objective.load_model(Accelerator(cpu=True)).double()
        assert ("shared prompt computed once" in capsys.readouterr().out) == shared
        batch = objective.collate(rows)
        assert objective.count(batch) == 3 and ("reward_at" in batch) == shared
        assert batch["input_ids"].shape[0] == (3 if shared else 6)
        loss, metrics = objective.loss(model, batch)
        loss.backward()
        out.append((loss.detach(), metrics, batch["num_tokens"], {n: p.grad for n, p in model.named_parameters()}))
    (l1, m1, t1, g1), (l2, m2, t2, g2) = out
    assert int(t1) == int(t2)
    torch.testing.assert_close(l1, l2, rtol=1e-6, atol=0)  # float32, as training computes it
    torch.testing.assert_close(m1["margin"], m2["margin"], rtol=1e-6, atol=1e-7)
    assert float(m1["accuracy"]) == float(m2["accuracy"])
    assert g1.keys() == g2.keys()
    for name in g1:  # relative to the largest entry: the float64 model's rewards meet a float32 loss
        assert (g1[name] - g2[name]).abs().max() <= 1e-6 * g2[name].abs().max(), name
