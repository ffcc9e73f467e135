"""Shared fixtures: the tiny models and the real SmolLM2 tokenizer, built once per session."""

import pytest


@pytest.fixture(scope="session")
def tokenizer():
    from unitune.models.load import load_tokenizer

    return load_tokenizer("tiny-llama")


@pytest.fixture()
def tiny_model():
    from unitune.models.load import load_model

    return load_model("tiny-llama")


def random_features(n: int, seed: int = 0, lo: int = 4, hi: int = 40, vocab: int = 2000):
    """Features with varying lengths and a random loss mask (first token never trained)."""
    import random

    rng = random.Random(seed)
    feats = []
    for _ in range(n):
        length = rng.randint(lo, hi)
        ids = [rng.randrange(5, vocab) for _ in range(length)]
        mask = [0] + [int(rng.random() < 0.7) for _ in range(length - 1)]
        mask[-1] = 1
        feats.append({"input_ids": ids, "mask": mask})
    return feats
