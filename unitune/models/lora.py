"""Make a loaded model trainable the way the config says: LoRA (and DoRA,
rsLoRA) through peft, or full fine-tuning with the first layers frozen, plus
gradient checkpointing (of every layer, or of as many as a long pass needs:
models/partial_checkpoint.py), the leaner SwiGLU backward (models/swiglu.py),
the activations backward makes again rather than keeps (models/recompute.py),
grouped key/value heads left ungrouped under a mask on CPU (models/attention.py), fp32
linears through oneDNN on CPU (models/onednn_linear.py), or,
under `train.compile`, decoder layers compiled instead of those (models/compile.py).

Under mixed precision, LoRA's frozen base linears are stored in the autocast dtype
(`lora.base_dtype auto`). Autocast computes them in that dtype anyway, but it caches a
cast only for weights that require grad, so a frozen fp32 weight is cast again at every
use (and at every recomputation under checkpointing), and the cast copy is held for the
backward pass next to the fp32 original. Stored in bf16 once, the arithmetic is the same
and the base holds 2 bytes a weight at the step's peak instead of 4 + 2 (BENCHMARKS.md). The fp32 originals
are what `lora.merge` needs: they are read back from the model's source before merging.
"""

import warnings

from unitune.errors import UnituneError


# peft still calls the old names; the warning says nothing a user can act on
warnings.filterwarnings("ignore", message=r".*(is_gradient_checkpointing|gradient_checkpointing_enable).*deprecated")


def prepare_for_training(model, lora_cfg, train_cfg):
    from unitune.models.attention import use_grouped_sdpa
    from unitune.models.compile import compile_layers
    from unitune.models.onednn_linear import use_onednn_linears
    from unitune.models.partial_checkpoint import checkpoint_above_tokens
    from unitune.models.recompute import recompute_inputs
    from unitune.models.shared_cast import share_input_casts
    from unitune.models.swiglu import fuse_swiglu

    use_grouped_sdpa()  # no copied key/value heads kept for backward, the same outputs
    onednn = use_onednn(train_cfg)
    if train_cfg.gradient_checkpointing and train_cfg.checkpoint_above_tokens:
        raise UnituneError(f"train.checkpoint_above_tokens {train_cfg.checkpoint_above_tokens} checkpoints the layers "
                           "a long pass needs, train.gradient_checkpointing true every layer of every pass: set one")
    if train_cfg.compile and (train_cfg.gradient_checkpointing or train_cfg.checkpoint_above_tokens):
        raise UnituneError("train.compile true recomputes activations by its own budget: lower "
                           "train.compile_memory_budget instead of setting train.gradient_checkpointing or "
                           "train.checkpoint_above_tokens (or set train.compile false)")
    if not train_cfg.compile:
        fuse_swiglu(model)  # one activation fewer kept per MLP, the same gradients
    model.config.use_cache = False  # a training pass builds no key/value cache (rollouts pass use_cache)
    if train_cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    elif train_cfg.checkpoint_above_tokens:
        checkpoint_above_tokens(model, train_cfg.checkpoint_above_tokens)  # only the layers a long pass needs
    if lora_cfg.enabled:
        if train_cfg.freeze_layers:
            raise UnituneError("train.freeze_layers is for full fine-tuning; with LoRA the base is frozen already "
                               "(pass --lora.enabled false, or drop train.freeze_layers)")
        model = add_lora(model, lora_cfg)
    elif train_cfg.freeze_layers:
        freeze_first_layers(model, train_cfg.freeze_layers)
    if train_cfg.compile:  # the compiler fuses and recomputes by itself (models/compile.py)
        compile_layers(model, train_cfg.compile_memory_budget)
        return model
    if onednn:
        use_onednn_linears(model)  # fp32 CPU passes: oneDNN's products instead of MKL's
    share_input_casts(model)  # under autocast: one cast of each norm output, the same gradients
    if train_cfg.recompute_elementwise and not train_cfg.gradient_checkpointing:
        recompute_inputs(model)  # norm outputs and MLP products made again in backward, the same gradients
    return model


def use_onednn(train_cfg) -> bool:
    """Whether decoder linears run through oneDNN in fp32 CPU passes (`train.onednn_linears`)."""
    from unitune.models.onednn_linear import available, faster_here

    if train_cfg.onednn_linears is True and not available():
        raise UnituneError("train.onednn_linears true: this torch build has no oneDNN linear kernel "
                           "(torch.ops.mkldnn._linear_pointwise); set it to auto or false")
    if train_cfg.onednn_linears is True and train_cfg.compile:
        raise UnituneError("train.onednn_linears true and train.compile true: compiled layers choose their own "
                           "kernels; set one")
    return train_cfg.onednn_linears is True or (train_cfg.onednn_linears == "auto" and not train_cfg.compile
                                                 and available() and faster_here())


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


def frozen_base_dtype(cfg, verb: str):
    """The dtype to store LoRA's frozen base linears in (None: as loaded). Not for DoRA (its
    magnitude is computed from the base weight), nor when GRPO is told to generate in fp32
    from the training model itself."""
    import torch

    low = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.train.mixed_precision)
    if cfg.lora.base_dtype == "model" or not cfg.lora.enabled or cfg.lora.use_dora or low is None:
        return None
    if verb == "grpo" and cfg.grpo.rollout_dtype == "float32":
        return None
    return low


def _frozen_base_layers(model):
    """(name, linear) for each LoRA layer's frozen base nn.Linear, as named in the base model."""
    import torch
    from peft.tuners.lora import LoraLayer

    tied = model.get_input_embeddings().weight
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer):
            base = module.get_base_layer()
            if isinstance(base, torch.nn.Linear) and not base.weight.requires_grad and base.weight is not tied:
                yield name.removeprefix("base_model.model."), base


def lower_frozen_base(model, dtype) -> int:
    """Store every LoRA layer's frozen base weight (and bias) in `dtype`; the number of parameters moved.
    Each original's pages are released as soon as it is cast, when they were mapped from the weight file.

    The model then runs under autocast only, so peft's own cast of each layer's input to the adapters'
    float32 is turned off: autocast undid it at once (the down projection's bf16 input was copied to
    fp32 and straight back, and both copies' gradients cast back in backward)."""
    from unitune.models.load import file_mappings, release_mapped

    files, moved = file_mappings(), 0
    for _, base in _frozen_base_layers(model):
        for p in (base.weight, base.bias):
            if p is not None and p.dtype != dtype:
                original = p.data
                p.data = original.to(dtype)
                release_mapped(original, files)
                moved += p.numel()
    for module in model.modules():
        if hasattr(module, "cast_input_dtype_enabled"):  # peft's tuner layers
            module.cast_input_dtype_enabled = False
    return moved


def restore_frozen_base(model, fresh) -> None:
    """Give the frozen base layers back the weights of `fresh` (the base model loaded again), e.g.
    the fp32 originals before merging the adapters into them."""
    for name, base in _frozen_base_layers(model):
        original = fresh.get_submodule(name)
        for p, q in ((base.weight, original.weight), (base.bias, original.bias)):
            if p is not None:
                if p.shape != q.shape:
                    raise UnituneError(f"restoring {name} from the base model: shape {tuple(q.shape)}, "
                                       f"trained with {tuple(p.shape)}")
                p.data = q.data.to(p.device)


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
