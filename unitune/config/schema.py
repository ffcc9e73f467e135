"""The config tree: one dataclass per named section, composed into `Config`.

The same field is spelled three ways and means one thing:
YAML `lora: {r: 16}`, flag `--lora.r 16`, Python `unitune.sft(lora={"r": 16})`.
Field docstrings (the comment after each field) are what `--help` prints.
"""

from dataclasses import dataclass, field
from typing import Literal, Optional, Union


@dataclass
class ModelConfig:
    name: str = "smollm2-135m-instruct"  # HF folder, hub id, .gguf file, or built-in name
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: fp32 on CPU, bf16 on GPUs that have it
    attn_implementation: Optional[str] = None  # e.g. sdpa, eager, flash_attention_2; None = transformers' default
    trust_remote_code: bool = False


@dataclass
class DataConfig:
    train: list[str] = field(default_factory=list)  # files, folders, datasets or built-in names; 'file.jsonl#N' samples N rows
    val: list[str] = field(default_factory=list)  # validation files (overrides val_ratio)
    val_ratio: float = 0.0  # hold out this fraction of train rows for validation when no val files are given
    weights: list[float] = field(default_factory=list)  # mixing proportions, one per train source (default: concatenate)
    columns: dict[str, str] = field(default_factory=dict)  # rename columns before conversion, e.g. {"q": "prompt"}
    max_length: int = 1024  # tokens per example (and per packed row)
    truncation: Literal["right", "left", "drop"] = "right"  # what to do with over-length examples
    packing: Optional[bool] = None  # pack examples into rows of max_length; None = on for pt, off for sft
    group_by_length: bool = True  # when not packing, batch examples of similar length together
    on_bad_row: Literal["error", "skip"] = "error"  # skip: drop rows that cannot be converted and report them
    seed: int = 42  # sampling ('#N', mixing, val split)


@dataclass
class TemplateConfig:
    name: str = "auto"  # auto: the tokenizer's own chat template, else 'default'; or a registered name
    loss: Literal["assistant", "last", "all"] = "assistant"  # which tokens are trained (per-message 'loss' overrides)
    system: Optional[str] = None  # system prompt added to conversations that have none


@dataclass
class LoraConfig:
    enabled: bool = True  # false: full fine-tuning
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["all-linear"])
    use_dora: bool = False
    use_rslora: bool = False
    merge: bool = False  # write final/ as merged full weights instead of an adapter folder
    base_dtype: Literal["auto", "model"] = "auto"  # auto: under mixed precision, store the frozen base linears in the autocast dtype (what they compute in anyway); model: as loaded


@dataclass
class TrainConfig:
    output_dir: str = "runs/latest"
    epochs: float = 1.0
    max_steps: int = 0  # > 0 overrides epochs
    batch_size: int = 4  # per device, per micro-batch
    grad_accum: int = 1
    lr: float = 2e-4
    weight_decay: float = 0.0
    optimizer: Literal["adamw", "adafactor"] = "adamw"  # adafactor: transformers' Adafactor as the HF Trainer's optim adafactor builds it (train.lr as given, no momentum, factored second moment: state of rows + columns per matrix instead of AdamW's two full copies; train.adam_betas unused)
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: float = 0.0
    warmup_steps: int = 0  # > 0 overrides warmup_ratio
    max_grad_norm: float = 1.0  # 0 disables clipping
    mixed_precision: Literal["no", "bf16", "fp16", "auto"] = "no"  # autocast; bf16 pays on CPUs with AMX / AVX-512 BF16 (auto: bf16 where the CPU or GPU has it, else no)
    gradient_checkpointing: bool = False
    checkpoint_above_tokens: int = 0  # > 0: a pass of T > N padded tokens checkpoints its first ceil(L(1 - N/T)) decoder layers, so it keeps about an N-token pass's activations (same gradients; the longest batches no longer set the peak); 0: off (unitune/models/partial_checkpoint.py)
    compile: bool = False  # torch.compile each decoder layer's training forward and backward (inductor: fused elementwise kernels; on CPU needs a C++ compiler); the first steps pay the compilation (unitune/models/compile.py)
    compile_memory_budget: float = 0.5  # under compile: the share (0-1] of the activations compile would keep that backward may keep; the rest is recomputed, cheapest first (torch's activation_memory_budget)
    recompute_elementwise: bool = True  # remake norm outputs, SwiGLU products, trained norms' normalised inputs and (under autocast) weights' low-precision casts in backward instead of keeping them (same gradients; off under checkpointing)
    onednn_linears: Union[bool, Literal["auto"]] = "auto"  # fp32 training passes on CPU: decoder linears through oneDNN's kernel instead of MKL's GEMM (the same products to fp32 rounding; +7-21% tokens/s in the benchmark's fp32 cells on a Zen 4, slower on an AVX2 Zen 3 and on an Intel AMX CPU); auto: on for AMD CPUs with AVX-512 where torch has the kernel and train.compile is off (unitune/models/onednn_linear.py)
    max_tokens_per_forward: Union[int, Literal["auto"]] = "auto"  # > 0: run each micro-batch as forward/backward passes of at most this many padded tokens (whole rows; same gradients, less activation memory); 0: one pass; auto: for LoRA sft/pt/dpo/rm on CPU without checkpointing 768 in fp32 and 1024 under autocast, else 0 (unitune/train/loop.py)
    optimizer_in_backward: bool = False  # step each parameter as soon as its gradient is complete, then free that gradient: a full set never exists (lowers the peak under gradient checkpointing, where gradients are most of it); needs max_grad_norm 0, grad_accum 1, one pass a step, one process
    cpu_allocator: Literal["auto", "keep", "release", "trim"] = "auto"  # keep: reuse freed memory (no page faults); trim: return it after every step; auto: trim for CPU runs with gradient checkpointing, else keep for CPU full FT, and for LoRA under mimalloc. glibc's malloc; under mimalloc (the `unitune` command's, unitune/malloc.py) keep makes it hand freed pages back after 3 s unused instead of 10 ms, the rest do nothing
    freeze_layers: int = 0  # full fine-tuning: freeze the embeddings and the first N decoder layers
    seed: int = 42
    log_every: int = 1
    eval_every: int = 0  # 0: evaluate only at the end (when there is a validation split)
    save_every: int = 0  # 0: no intermediate checkpoints
    save_total_limit: int = 2  # checkpoints kept (oldest removed first)
    resume: Optional[str] = None  # 'latest' or a checkpoint folder
    on_nan: Literal["stop", "skip"] = "stop"
    nproc: int = 1  # > 1 launches torchrun with this many processes on this machine
    progress: bool = True
    plot: bool = True  # write loss.png at the end
    tensorboard: bool = True


@dataclass
class DpoConfig:
    loss: list[str] = field(default_factory=lambda: ["sigmoid"])  # sigmoid|hinge|ipo|robust|simpo|orpo|cpo|sft; several add up (RPO = [sigmoid, sft])
    loss_weights: list[float] = field(default_factory=list)  # one weight per loss (default 1 each)
    beta: float = 0.1  # strength of the preference (IPO: tau; ORPO: lambda)
    label_smoothing: float = 0.0  # robust (rDPO): assumed fraction of flipped labels, in [0, 0.5)
    gamma: float = 0.5  # SimPO: target reward margin
    shared_prompt: bool = True  # one row per pair, [prompt | chosen | rejected]: the prompt goes through the model once


@dataclass
class KtoConfig:
    loss: Literal["kto", "apo_zero_unpaired"] = "kto"  # apo_zero_unpaired: no KL reference point
    beta: float = 0.1
    desirable_weight: float = 1.0  # lambda_D
    undesirable_weight: float = 1.0  # lambda_U; aim for lambda_D*n_D / (lambda_U*n_U) in [1, 4/3]


@dataclass
class RmConfig:
    center_rewards_coefficient: float = 0.0  # adds c * mean((r_chosen + r_rejected)^2); 0.01 is common
    shared_prompt: bool = True  # decoders: one row per pair, [prompt | chosen | rejected]: the prompt goes through the model once


@dataclass
class RefConfig:
    mode: Literal["auto", "adapter", "copy", "precompute", "none"] = "auto"  # auto: adapter with LoRA, precompute for full fine-tuning, none when every loss is reference-free


@dataclass
class GrpoConfig:
    algo: Literal["grpo", "dapo", "dr_grpo", "gspo", "rloo", "reinforce_pp"] = "grpo"  # preset for every knob left unset (null) below
    reward: list[str] = field(default_factory=list)  # accuracy[:MODE[:COLUMN]] | format:REGEX | contains:TEXT | length:N | soft_overlong[:BUFFER] | repetition[:N] | rm:PATH | FILE.py:FUNCTION
    reward_weights: list[float] = field(default_factory=list)  # one per reward function (default 1 each)
    num_generations: int = 8  # G completions per prompt (train.batch_size counts prompts)
    max_completion_length: int = 256  # new tokens per completion
    temperature: float = 1.0  # sampling temperature; log-probs use the same
    top_p: float = 1.0
    top_k: int = 0  # 0: off
    stop: list[str] = field(default_factory=list)  # strings that end a completion
    loss_type: Optional[Literal["grpo", "bnpo", "dr_grpo", "dapo"]] = None  # null: the algo's
    scale_rewards: Optional[Literal["group", "batch", "none"]] = None  # std used to scale grpo advantages
    advantage: Optional[Literal["grpo", "rloo", "reinforce_pp", "reinforce_pp_baseline"]] = None
    beta: Optional[float] = None  # KL coefficient; 0 skips the reference model
    kl_in_reward: Optional[bool] = None  # KL (k1) subtracted from the reward (rloo, reinforce_pp) instead of k3 in the loss
    epsilon: Optional[float] = None  # lower clip range
    epsilon_high: Optional[float] = None  # upper clip range (DAPO clip-higher)
    delta: Optional[float] = None  # cap on the unclipped ratio (INTELLECT-2); null: none
    importance_sampling_level: Optional[Literal["token", "sequence", "sequence_sum"]] = None  # sequence: GSPO
    bias_correction_kl: bool = False  # KL term times the importance ratio (DeepSeek-V3.2)
    num_iterations: int = 1  # optimizer steps per generation batch (old log-probs frozen across them)
    dynamic_sampling: Optional[bool] = None  # DAPO: drop groups with all-equal rewards, generate more to refill
    max_resample: int = 3  # dynamic sampling: extra generation rounds per step at most
    mask_truncated_completions: Optional[bool] = None  # DAPO overlong filtering: no loss on completions cut at the limit
    engine: Literal["auto", "hf", "vllm"] = "auto"  # rollout engine (auto: hf, in-process)
    shared_prefix: bool = True  # each prompt computed once per group: one KV cache for its G generations, one training row [prompt | completions]
    rollout_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # generate from a copy in this dtype (auto: bfloat16 under train.mixed_precision bf16, else the model itself)
    rollout_prepack: bool = True  # CPU: decode from a copy whose linear weights are pre-packed for oneDNN's kernels (~1.5-2x the decode rate; freed after each rollout)
    log_completions_every: int = 10  # write sampled completions to completions.jsonl every N steps (0: never)
    log_completions_count: int = 8  # completions per table


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    template: TemplateConfig = field(default_factory=TemplateConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    dpo: DpoConfig = field(default_factory=DpoConfig)
    kto: KtoConfig = field(default_factory=KtoConfig)
    rm: RmConfig = field(default_factory=RmConfig)
    ref: RefConfig = field(default_factory=RefConfig)
    grpo: GrpoConfig = field(default_factory=GrpoConfig)
