"""Make a loaded model trainable the way the config says: LoRA (and DoRA,
rsLoRA) through peft, or full fine-tuning with the first layers frozen, plus
gradient checkpointing."""

import warnings

from unitune.errors import UnituneError


# peft still calls the old names; the warning says nothing a user can act on
warnings.filterwarnings("ignore", message=r".*(is_gradient_checkpointing|gradient_checkpointing_enable).*deprecated")


def prepare_for_training(model, lora_cfg, train_cfg):
    if train_cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if lora_cfg.enabled:
        if train_cfg.freeze_layers:
            raise UnituneError("train.freeze_layers is for full fine-tuning; with LoRA the base is frozen already "
                               "(pass --lora.enabled false, or drop train.freeze_layers)")
        return add_lora(model, lora_cfg)
    if train_cfg.freeze_layers:
        freeze_first_layers(model, train_cfg.freeze_layers)
    return model


def add_lora(model, cfg):
    from peft import LoraConfig, get_peft_model

    targets = cfg.target_modules
    target = "all-linear" if targets == ["all-linear"] else targets
    # a sequence classifier (rm) trains its new head in full: peft's SEQ_CLS adds it to modules_to_save
    task = "SEQ_CLS" if type(model).__name__.endswith("ForSequenceClassification") else "CAUSAL_LM"
    peft_cfg = LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=target,
                          use_dora=cfg.use_dora, use_rslora=cfg.use_rslora, task_type=task)
    try:
        return get_peft_model(model, peft_cfg)
    except ValueError as err:
        raise UnituneError(f"lora.target_modules {targets}: {err}") from None


def freeze_first_layers(model, n: int) -> None:
    """Freeze the input embeddings (and a tied LM head with them) and decoder layers [0, n)."""
    layers = getattr(getattr(model, "model", None), "layers", None)
    if layers is None:
        raise UnituneError(f"train.freeze_layers: cannot find the decoder layers of {type(model).__name__}")
    if n > len(layers):
        raise UnituneError(f"train.freeze_layers={n} but the model has {len(layers)} layers")
    model.get_input_embeddings().weight.requires_grad_(False)
    for layer in layers[:n]:
        layer.requires_grad_(False)


def count_parameters(model) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())
