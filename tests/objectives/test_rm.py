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
    loss, metrics = objective.loss(model, objective.collate(rows))
    loss.backward()
    head = [p for n, p in model.named_parameters() if "classifier" in n and p.requires_grad]
    assert head and all(p.grad is not None for p in head) and float(metrics["accuracy"]) in (0.0, 2.0)
