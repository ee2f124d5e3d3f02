"""Typed configuration: the schema every Hydra composition is validated against.

run.py registers these dataclasses with Hydra's ConfigStore, so a misspelt key fails at
composition; `__post_init__` checks values, so `OmegaConf.to_object` fails on bad ones
before any work starts. Nothing here imports Hydra: the core and the tests build
`Config()` directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

FAMILIES = ("qwen2_5_vl", "qwen3_vl")
DTYPES = ("float32", "bfloat16", "float16")
ATTN_IMPLEMENTATIONS = ("eager", "sdpa", "flash_attention_2")
DATASETS = ("synthetic", "geometry3k", "chartqa", "virl39k", "care_mix")  # care.data.training
# ChartQA's questions by its human_or_machine column: human-written (0), machine-augmented (1), or both
CHARTQA_SUBSETS = ("human", "augmented", "all")
CHARTQA_SPLITS = ("train", "val", "test")  # HuggingFaceM4/ChartQA's splits (data/<split>-*.parquet)
EXTRACTION_RULES = ("strict", "lenient")  # care.verifiers.extraction
TASKS = ("train", "eval", "plan")  # plan: print each job's shape and cost (care.plan), run nothing
BENCHMARKS = ("synthetic", "mathvista", "mathverse", "mathvision", "mmmu", "mmmu_pro_standard", "mmmu_pro_vision")
WANDB_MODES = ("auto", "online", "offline", "disabled")
REFLECTION_TRACES = ("mislocate", "reconcile", "rederive")  # cold-start reflection traces (care.data.synthetic.demonstration)
REFLECTION_LOSSES = ("after_cue", "whole")  # what of a reflection trace the cold start trains (care.coldstart)
COLD_STARTS = ("synthetic", "sft", "checkpoint", "none")  # where RL's starting policy comes from (care.coldstart)


def check_choice(key: str, value: Any, accepted: tuple) -> None:
    if value not in accepted:
        raise ValueError(f"{key}={value!r} is not accepted; choose one of {', '.join(map(str, accepted))}")


def check_range(key: str, value: float, low: float | None = None, high: float | None = None,
                low_open: bool = False) -> None:
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and value > high
    if too_low or too_high:
        lo = "-inf" if low is None else f"{low}"
        hi = "inf" if high is None else f"{high}"
        bracket = "(" if low_open else "["
        raise ValueError(f"{key}={value!r} is out of range; accepted: {bracket}{lo}, {hi}]")


@dataclass
class TinyArch:
    """Sizes of an offline, randomly initialised backbone small enough to train on 2 CPU cores."""

    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 256
    vision_depth: int = 2
    vision_hidden_size: int = 64
    vocab_size: int = 512

    def __post_init__(self) -> None:
        for key in ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "intermediate_size",
                    "vision_depth", "vision_hidden_size", "vocab_size"):
            check_range(f"backbone.tiny.{key}", getattr(self, key), 1)
        if self.hidden_size % self.num_heads or self.num_heads % self.num_kv_heads:
            raise ValueError("backbone.tiny: hidden_size must divide by num_heads and num_heads by num_kv_heads")


@dataclass
class ArchSize:
    """A real backbone's sizes, copied from its hub config.json: task=plan's memory estimate reads
    them (no weights needed). `vision_params` is part of `num_params`."""

    num_params: int
    vision_params: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    vocab_size: int

    @property
    def kv_dim(self) -> int:
        """Width of one token's keys (or values) in a layer: what the KV cache stores."""
        return self.hidden_size // self.num_heads * self.num_kv_heads

    def __post_init__(self) -> None:
        for key in ("num_params", "vision_params", "hidden_size", "num_layers", "num_heads", "num_kv_heads",
                    "intermediate_size", "vocab_size"):
            check_range(f"backbone.arch.{key}", getattr(self, key), 1)


@dataclass
class BackboneConfig:
    """A vision-language policy: a hub id or local weights, or a tiny offline build (`tiny` set).

    `dtype` is the dtype the weights are loaded and trained in (the optimizer's master copy);
    the compute dtype is `rl.compute_dtype`. Real backbones train float32 weights under bf16
    compute: an AdamW update of lr 1e-6 vanishes in bf16 weights.
    """

    name: str = "tiny_qwen2_5_vl"
    family: str = "qwen2_5_vl"
    hub_id: str | None = None
    path: str | None = None  # local weights; wins over hub_id
    dtype: str = "float32"
    attn_implementation: str = "sdpa"
    min_pixels: int = 84 * 84  # the tiny default: a 3x3 board of 28 px cells, one merged vision token each
    max_pixels: int = 84 * 84
    tiny: TinyArch | None = field(default_factory=TinyArch)
    arch: ArchSize | None = None  # real backbones: sizes for task=plan (conf/backbone/<name>.yaml)

    def __post_init__(self) -> None:
        check_choice("backbone.family", self.family, FAMILIES)
        check_choice("backbone.dtype", self.dtype, DTYPES)
        check_choice("backbone.attn_implementation", self.attn_implementation, ATTN_IMPLEMENTATIONS)
        check_range("backbone.min_pixels", self.min_pixels, 1)
        check_range("backbone.max_pixels", self.max_pixels, self.min_pixels)
        if self.tiny is None and not (self.hub_id or self.path):
            raise ValueError(f"backbone {self.name!r} needs backbone.path (local weights) or backbone.hub_id")


@dataclass
class DataConfig:
    """Where prompts come from. `synthetic` is generated locally and needs no download; the real
    training sets load from `path` (a local copy in the hub layout; for care_mix a folder with one
    entry per component) or, when it is unset, from their hub id through the datasets cache.

    A real set goes load -> dedupe -> drop prompts over `rl.max_prompt_length` -> seeded shuffle ->
    hold out `eval_size` -> cap training at `train_size` (None: all of it); see care.data.training.
    """

    name: str = "synthetic"
    seed: int = 0
    train_size: int | None = 2048  # None: every prompt left after the hold-out (real data)
    eval_size: int = 256
    grid: int = 3  # cells per side of the synthetic image
    cell_px: int = 28
    path: str | None = None  # a local copy of a real training set; None loads the hub id
    # Counts are contracts (care.data.training): asking for more prompts than exist is an error.
    max_train_size: int | None = None  # a preset's cap (scale=toy: 48): trains on at most this, never an error
    allow_fewer: bool = False  # train on what is left when fewer than data.train_size prompts remain
    max_dropped_fraction: float = 0.0  # bad rows that may be dropped (counted per reason); 0: any fails the run
    max_overlong_fraction: float = 0.05  # prompts over rl.max_prompt_length that may be filtered out
    # Which ChartQA rows train (data=chartqa, and ChartQA's part of care_mix): the human-written questions of
    # train + val reproduce the paper's ~49.3K with the other two sets (49,329; all of train: 69,270). The
    # paper does not say; README's data paragraph and docs/method.md §10 give the figures.
    chartqa_subset: str = "human"
    chartqa_splits: list[str] = field(default_factory=lambda: ["train", "val"])

    def __post_init__(self) -> None:
        check_choice("data.name", self.name, DATASETS)
        check_choice("data.chartqa_subset", self.chartqa_subset, CHARTQA_SUBSETS)
        if not self.chartqa_splits:
            raise ValueError(f"data.chartqa_splits is empty; list one or more of {', '.join(CHARTQA_SPLITS)}")
        for split in self.chartqa_splits:
            check_choice("data.chartqa_splits", split, CHARTQA_SPLITS)
        if len(set(self.chartqa_splits)) < len(self.chartqa_splits):
            raise ValueError(f"data.chartqa_splits={list(self.chartqa_splits)} names a split twice; "
                             "its rows would be read twice")
        if self.train_size is not None:
            check_range("data.train_size", self.train_size, 1)
        if self.max_train_size is not None:
            check_range("data.max_train_size", self.max_train_size, 1)
        check_range("data.max_dropped_fraction", self.max_dropped_fraction, 0.0, 1.0)
        check_range("data.max_overlong_fraction", self.max_overlong_fraction, 0.0, 1.0)
        check_range("data.eval_size", self.eval_size, 1)
        check_range("data.grid", self.grid, 2, 6)
        check_range("data.cell_px", self.cell_px, 8)
        if self.name == "synthetic" and self.path:
            raise ValueError(f"data.path={self.path!r} is set but data=synthetic is generated, not loaded; "
                             f"choose one of {', '.join(DATASETS[1:])} to train on a local copy")
        if self.name == "synthetic" and self.train_size is None:
            raise ValueError("data.train_size=None with data=synthetic: the boards are generated; give a size")


@dataclass
class ColdStartConfig:
    """The policy RL starts from (the paper's cold start): `name` is the `cold_start=` choice.

    synthetic: SFT on the synthetic task's demonstrations; sft: SFT on `path` (TRL conversational or
    LLaVA/ShareGPT files); checkpoint: `checkpoint`, a cold-started policy made elsewhere; none: the
    backbone. Built ones are cached by content hash (care.coldstart).
    """

    name: str = "synthetic"  # synthetic | sft | checkpoint | none (conf/cold_start/<name>.yaml)
    path: str | None = None  # sft: a file or folder of SFT conversations (e.g. Vision-R1-cold)
    checkpoint: str | None = None  # checkpoint: a directory with the cold-started weights and processor
    num_demos: int = 1024
    reflection_fraction: float = 0.15
    answer_slip: float = 0.25  # share of demonstrations whose final answer contradicts their reasoning
    reflection_trace: str = "rederive"  # what a reflection trace teaches: rederive | reconcile | mislocate
    # after_cue: a reflection trace's failed attempt and cue stay out of the loss (a cold start that
    # trains on them also learns to fail); whole: train the whole trace (the default until 0e53052, 2026-12-02)
    reflection_loss: str = "after_cue"
    epochs: float = 6.0
    learning_rate: float = 3e-3
    batch_size: int = 16  # global: split over processes, times accumulation when micro_batch_size is set
    micro_batch_size: int | None = None  # per process and step; None: batch_size / processes, no accumulation
    warmup_ratio: float = 0.05  # share of the steps warming up, then cosine decay
    max_length: int | None = None  # sequence cutoff in tokens (prompt + image tokens + response); None: none
    # the cold start's own seed (data order, demonstrations): one cold start serves every RL seed of a sweep
    seed: int = 0
    # checkpoint every N optimizer steps beside the cold start being built (cache_dir/cold_start/); a killed or
    # requeued build resumes from the newest complete one
    save_steps: int = 100

    def __post_init__(self) -> None:
        # cold_start=sft without cold_start.path (or checkpoint without cold_start.checkpoint) composes, so
        # task=plan needs no data; training refuses it before any work (care.coldstart.check_cold_start)
        check_choice("cold_start.name", self.name, COLD_STARTS)
        check_range("cold_start.num_demos", self.num_demos, 1)
        check_range("cold_start.reflection_fraction", self.reflection_fraction, 0.0, 1.0)
        check_range("cold_start.answer_slip", self.answer_slip, 0.0, 1.0)
        check_choice("cold_start.reflection_trace", self.reflection_trace, REFLECTION_TRACES)
        check_choice("cold_start.reflection_loss", self.reflection_loss, REFLECTION_LOSSES)
        check_range("cold_start.epochs", self.epochs, 0.0, low_open=True)
        check_range("cold_start.learning_rate", self.learning_rate, 0.0, low_open=True)
        check_range("cold_start.batch_size", self.batch_size, 1)
        if self.micro_batch_size is not None:
            check_range("cold_start.micro_batch_size", self.micro_batch_size, 1, self.batch_size)
        if not 0.0 <= self.warmup_ratio < 1.0:  # a share of the steps (TRL reads 1 and above as a step count)
            raise ValueError(f"cold_start.warmup_ratio={self.warmup_ratio!r} is out of range; accepted: [0.0, 1.0)")
        if self.max_length is not None:
            check_range("cold_start.max_length", self.max_length, 1)
        check_range("cold_start.save_steps", self.save_steps, 1)


@dataclass
class RLConfig:
    """Group-relative RL settings shared by every algorithm (TRL GRPOConfig underneath).

    These defaults are the tiny backbones' CPU settings; real backbones get the paper recipe
    from conf/recipe/paper.yaml (the only place it is written). A step is one optimizer update:
    each rollout batch of `prompts_per_rollout` prompts x G feeds `prompts_per_rollout /
    prompts_per_update` updates (`batch_geometry` derives TRL's batch keys from them).
    """

    steps: int = 60  # optimizer updates in the whole run
    num_generations: int = 8  # G: rollouts per prompt
    prompts_per_rollout: int = 8  # prompts per rollout batch (one generation round)
    prompts_per_update: int | None = None  # prompts per optimizer update; None: = prompts_per_rollout
    micro_batch_size: int | None = None  # sequences per process per forward/backward; None: the whole update
    learning_rate: float = 3e-4  # AdamW, constant schedule
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    compute_dtype: str = "float32"  # autocast dtype on GPUs (mixed precision); CPUs compute in float32
    temperature: float = 1.0
    top_p: float = 1.0
    # tokens (chat template + image tokens at the pixel caps); longer prompts are dropped from the
    # training data (care.data.training), never truncated; None: no limit
    max_prompt_length: int | None = 2048
    max_completion_length: int = 64
    format_weight: float = 0.0
    accuracy_weight: float = 1.0  # reward = accuracy_weight * acc + format_weight * format (reference: 0.9 / 0.1)
    # the verifier's answer rule in training (care.verifiers.extraction): strict = the <answer> span of a
    # well-formed response only, so a policy is never paid for skipping the span (lenient was the
    # synthetic default until 2026-12-02: 49.35 -> 59.11 then, 49.0 -> 59.9 strict, docs/benchmarks.md)
    extraction: str = "strict"
    # share of training verdicts flipped at random: a config known to be worse, the analysis' control
    # (benchmarks/controls.py, docs/benchmarks.md); evaluation is never noisy
    reward_noise: float = 0.0
    logging_steps: int = 1
    save_steps: int = 20  # checkpoint every N steps into <run_dir>/checkpoints; a rerun resumes there

    def __post_init__(self) -> None:
        check_range("rl.steps", self.steps, 1)
        check_range("rl.num_generations", self.num_generations, 2)
        check_range("rl.prompts_per_rollout", self.prompts_per_rollout, 1)
        if self.prompts_per_update is not None:
            check_range("rl.prompts_per_update", self.prompts_per_update, 1)
        if self.micro_batch_size is not None:
            check_range("rl.micro_batch_size", self.micro_batch_size, 1)
        check_range("rl.learning_rate", self.learning_rate, 0.0, low_open=True)
        check_range("rl.weight_decay", self.weight_decay, 0.0)
        check_range("rl.max_grad_norm", self.max_grad_norm, 0.0, low_open=True)
        check_choice("rl.compute_dtype", self.compute_dtype, DTYPES)
        check_range("rl.temperature", self.temperature, 0.0, low_open=True)
        check_range("rl.top_p", self.top_p, 0.0, 1.0, low_open=True)
        if self.max_prompt_length is not None:
            check_range("rl.max_prompt_length", self.max_prompt_length, 1)
        check_range("rl.max_completion_length", self.max_completion_length, 1)
        check_range("rl.format_weight", self.format_weight, 0.0)
        check_range("rl.accuracy_weight", self.accuracy_weight, 0.0, low_open=True)
        check_choice("rl.extraction", self.extraction, EXTRACTION_RULES)
        check_range("rl.reward_noise", self.reward_noise, 0.0, 1.0)
        check_range("rl.save_steps", self.save_steps, 1)


@dataclass(frozen=True)
class BatchGeometry:
    """TRL's batch keys for one rollout batch of `rollout_prompts` x G split into updates."""

    rollout_prompts: int
    update_prompts: int
    micro_batch_size: int  # TRL per_device_train_batch_size (sequences)
    gradient_accumulation_steps: int
    steps_per_generation: int  # micro-steps fed by one generation round
    generation_batch_size: int  # sequences per rollout batch, all processes together

    @property
    def updates_per_rollout(self) -> int:
        return self.rollout_prompts // self.update_prompts


def batch_geometry(rl: RLConfig, num_processes: int, processes_key: str = "cluster.gpus") -> BatchGeometry:
    """Derive micro-steps and accumulation so every process count gives the same rollout batch and update.

    Rollouts are counted over all processes (groups may span ranks): an update of P prompts is
    P x G sequences = micro_batch_size x num_processes x gradient_accumulation_steps.
    """
    G = rl.num_generations
    update_prompts = rl.prompts_per_update or rl.prompts_per_rollout
    if rl.prompts_per_rollout % update_prompts:
        raise ValueError(f"rl.prompts_per_rollout={rl.prompts_per_rollout} is not a multiple of "
                         f"rl.prompts_per_update={update_prompts}: a rollout batch must split into whole updates")
    update_sequences = update_prompts * G
    if rl.micro_batch_size is None:
        if update_sequences % num_processes:
            raise ValueError(f"rl.prompts_per_update={update_prompts} x rl.num_generations={G} = {update_sequences} "
                             f"rollouts do not split evenly over {processes_key}={num_processes} processes")
        micro = update_sequences // num_processes
    else:
        micro = rl.micro_batch_size
    per_micro_step = micro * num_processes
    if update_sequences % per_micro_step:
        raise ValueError(f"rl.prompts_per_update={update_prompts} x rl.num_generations={G} = {update_sequences} "
                         f"sequences per update do not divide into rl.micro_batch_size={micro} x "
                         f"{processes_key}={num_processes} = {per_micro_step} per micro-step")
    accumulation = update_sequences // per_micro_step
    return BatchGeometry(rollout_prompts=rl.prompts_per_rollout, update_prompts=update_prompts, micro_batch_size=micro,
                         gradient_accumulation_steps=accumulation,
                         steps_per_generation=accumulation * (rl.prompts_per_rollout // update_prompts),
                         generation_batch_size=rl.prompts_per_rollout * G)


ROLLOUT_ENGINES = ("hf", "vllm")
VLLM_MODES = ("colocate", "server")


@dataclass
class RolloutConfig:
    """How rollouts are generated: HF generate (CPU and GPU) or vLLM (GPU machines, `vllm` extra)."""

    engine: str = "hf"
    vllm_mode: str = "colocate"  # colocate: vLLM shares the training GPUs; server: upstream `vllm serve` elsewhere (docs/sharding.md)
    vllm_gpu_memory_utilization: float = 0.3
    vllm_tensor_parallel_size: int = 1
    vllm_server_base_url: str | None = None  # server mode, e.g. http://127.0.0.1:8000
    vllm_importance_sampling_correction: bool = True
    vllm_enable_sleep_mode: bool = False  # colocate: free vLLM's memory while the policy trains

    def __post_init__(self) -> None:
        check_choice("rollout.engine", self.engine, ROLLOUT_ENGINES)
        check_choice("rollout.vllm_mode", self.vllm_mode, VLLM_MODES)
        check_range("rollout.vllm_gpu_memory_utilization", self.vllm_gpu_memory_utilization, 0.0, 1.0, low_open=True)
        check_range("rollout.vllm_tensor_parallel_size", self.vllm_tensor_parallel_size, 1)


ALGORITHMS = ("grpo", "dapo", "gspo", "care")
TOKEN_LEVEL_LOSSES = ("dapo", "bnpo")


@dataclass
class AlgorithmConfig:
    """What turns rewards into a loss. These defaults are CARE's (the reference config's clip
    0.2/0.3 and k3 KL 0.01) and GRPO's alike; conf/algorithm/<method>.yaml writes only what a
    method changes (DAPO, GSPO, TRL's own defaults as grpo_trl)."""

    name: str = "care"
    loss_type: str = "dapo"  # token-level mean: masked rollouts leave the normaliser
    epsilon: float = 0.2
    epsilon_high: float = 0.3
    beta: float = 0.01  # k3 KL coefficient to the reference policy
    importance_sampling_level: str = "token"  # "sequence" is GSPO
    mask_truncated_completions: bool = False  # DAPO's overlong masking
    # dual-clip (Ye et al. 2020): a negative-advantage token's ratio counts at most `delta`, so one stale token
    # cannot dominate the loss; TRL's own `delta` (its two-sided clip is exactly dual-clip). The reference
    # (EasyR1) uses 3.0: recipe=paper sets it; None (the CPU default and TRL's) leaves plain PPO clipping
    delta: float | None = None
    scale_rewards: str = "group"
    # DAPO's dynamic sampling (docs/method.md §6, care.trainer.dynamic_sampling): groups whose rewards are all
    # equal leave the batch and rounds of fresh prompts fill their slots, at most `max_sampling_rounds` rounds
    # of one rollout batch each (DAPO's verl recipe: 10 rounds of 3x its batch); after the last round the
    # step trains on the groups kept. On in conf/algorithm/dapo.yaml; any algorithm may turn it on
    dynamic_sampling: bool = False
    max_sampling_rounds: int = 10
    # the reference's per-token k3 KL clamp (EasyR1: ±10; care.trainer.kl_clamp): a token over it keeps its
    # policy-gradient term and loses its KL gradient. recipe=paper sets 10; None (CPU default, TRL) leaves it
    kl_clamp: float | None = None
    # TRL weights each token's KL by its importance ratio (use_bias_correction_kl, TRL's default): its gradient
    # gains a k3 * grad(logp) term the reference's plain k3 loss has not. recipe=paper turns it off
    kl_bias_correction: bool = True

    def __post_init__(self) -> None:
        check_choice("algorithm.name", self.name, ALGORITHMS)
        check_choice("algorithm.loss_type", self.loss_type, ("grpo", "bnpo", "dr_grpo", "dapo"))
        check_range("algorithm.epsilon", self.epsilon, 0.0, 1.0, low_open=True)
        check_range("algorithm.epsilon_high", self.epsilon_high, 0.0, 1.0, low_open=True)
        check_range("algorithm.beta", self.beta, 0.0)
        if self.delta is not None and self.delta <= 1 + self.epsilon_high:
            raise ValueError(f"algorithm.delta={self.delta} must exceed 1 + algorithm.epsilon_high = "
                             f"{1 + self.epsilon_high:g} (the dual-clip bound sits above the PPO clip), or be null")
        check_choice("algorithm.importance_sampling_level", self.importance_sampling_level, ("token", "sequence"))
        check_choice("algorithm.scale_rewards", self.scale_rewards, ("group", "batch", "none"))
        check_range("algorithm.max_sampling_rounds", self.max_sampling_rounds, 1)
        if self.kl_clamp is not None:
            check_range("algorithm.kl_clamp", self.kl_clamp, 0.0, low_open=True)
        if self.dynamic_sampling and self.loss_type not in TOKEN_LEVEL_LOSSES:
            raise ValueError(f"algorithm.dynamic_sampling=true with algorithm.loss_type={self.loss_type!r}: slots left "
                             f"empty are masked out, which a per-sequence mean would still count; choose one of "
                             f"{', '.join(TOKEN_LEVEL_LOSSES)}")
        if self.name == "care" and self.loss_type not in TOKEN_LEVEL_LOSSES:
            raise ValueError(f"algorithm.loss_type={self.loss_type!r} with algorithm.name='care': a per-sequence mean "
                             f"would count rollouts outside the subgroup; choose one of {', '.join(TOKEN_LEVEL_LOSSES)}")


def _care_options():
    """A mutable mirror of care.objective.CareConfig (frozen), so Hydra can override its keys."""
    from dataclasses import fields, make_dataclass
    from typing import get_type_hints

    from care.objective import CareConfig

    def validate(self) -> None:  # CareConfig checks every value; the message gets the user's key path
        try:
            CareConfig(**{f.name: getattr(self, f.name) for f in fields(CareConfig)})
        except ValueError as err:
            raise ValueError(f"care.{err}") from None

    hints = get_type_hints(CareConfig)
    cls = make_dataclass("CareOptions", [(f.name, hints[f.name], field(default=f.default)) for f in fields(CareConfig)],
                         namespace={"__post_init__": validate})
    cls.__doc__ = "Every CARE objective option (care.objective.CareConfig), overridable as care.<key>."
    cls.__module__ = __name__
    return cls


CareOptions = _care_options()


PARALLEL_STRATEGIES = ("ddp", "fsdp", "zero3")
GPU_TYPES = ("a100", "h100", "h200")  # care.plan.GPUS holds each one's figures and their sources


@dataclass
class ParallelConfig:
    """How a multi-GPU job lays the policy out (conf/parallel): task=plan plans it, the trainer
    applies it through TRL/accelerate (care.sharding) and checks after wrapping that it took."""

    strategy: str = "ddp"
    offload_params: bool = False  # parameters live on the CPU between uses (fsdp/zero3)
    offload_optimizer: bool = False  # optimizer state lives on the CPU (fsdp/zero3)
    activation_checkpointing: bool = False  # recompute activations in backward (fsdp/zero3 presets: on)

    def __post_init__(self) -> None:
        check_choice("parallel.strategy", self.strategy, PARALLEL_STRATEGIES)
        if self.strategy == "ddp" and (self.offload_params or self.offload_optimizer):
            raise ValueError("parallel.offload_params/offload_optimizer need parallel=fsdp or parallel=zero3")


@dataclass
class ClusterConfig:
    """The hardware a job is planned for: GPUs of a local launch (under cluster=slurm the
    launcher's per-backbone GPU count wins) and each GPU's memory, for task=plan's fit check."""

    gpus: int = 1
    gpu: str = "h100"  # the GPU type: task=plan's memory and speed (care.plan.GPUS), and what SLURM is asked for
    gpu_mem_gb: float | None = None  # None: the GPU type's memory (care.plan.GPUS)
    require_fit: bool = True  # false: queue a job even where task=plan says it does not fit in memory or time

    def __post_init__(self) -> None:
        check_range("cluster.gpus", self.gpus, 1)
        check_choice("cluster.gpu", self.gpu, GPU_TYPES)
        if self.gpu_mem_gb is not None:
            check_range("cluster.gpu_mem_gb", self.gpu_mem_gb, 0.0, low_open=True)


RGR_VARIANTS = ("cue", "no_cue", "random")
RGR_TRAIN_CONTEXTS = ("prompt_only", "with_prefix")


@dataclass
class RGRConfig:
    """Reflection-Guided Resampling (docs/method.md §7); only `algorithm=care` runs it.

    variant: `cue` repairs the nearest hard negative with the cue; `no_cue` resamples the same
    prefix without it; `random` draws a fresh sample from the prompt (the paper's ablation).
    train_context: `prompt_only` trains the repaired continuation under the original prompt
    (reference code); `with_prefix` trains it after the repair context, whose tokens stay out of
    the loss. The cue is `cue`: structured (the reference code's) | paper (the paper's wording) |
    custom (with `cue_text`), e.g. `rgr.cue=paper`.
    """

    enabled: bool = True
    variant: str = "cue"
    train_context: str = "prompt_only"
    cue: str = "structured"
    cue_text: str | None = None  # the cue itself when cue=custom
    max_cue_tokens: int = 64
    temperature: float = 0.6
    top_p: float = 0.95
    max_new_tokens: int = 512

    def __post_init__(self) -> None:
        from care.repair import CUE_CHOICES, cue_text

        check_choice("rgr.variant", self.variant, RGR_VARIANTS)
        check_choice("rgr.train_context", self.train_context, RGR_TRAIN_CONTEXTS)
        check_choice("rgr.cue", self.cue, CUE_CHOICES)
        if self.cue_text is not None and self.cue != "custom":
            raise ValueError(f"rgr.cue_text is set but rgr.cue={self.cue!r}; choose rgr.cue=custom to use your own text")
        cue_text(self.cue, self.cue_text)
        check_range("rgr.max_cue_tokens", self.max_cue_tokens, 1)
        check_range("rgr.temperature", self.temperature, 0.0, low_open=True)
        check_range("rgr.top_p", self.top_p, 0.0, 1.0, low_open=True)
        check_range("rgr.max_new_tokens", self.max_new_tokens, 1)

    @property
    def cue_string(self) -> str:
        from care.repair import cue_text

        return cue_text(self.cue, self.cue_text)


@dataclass
class EvalPaths:
    """Local copies of the benchmarks (`eval.paths.<name>=/dir`); None loads from the hub id."""

    mathvista: str | None = None
    mathverse: str | None = None
    mathvision: str | None = None
    mmmu: str | None = None
    mmmu_pro_standard: str | None = None
    mmmu_pro_vision: str | None = None

    def get(self, name: str) -> str | None:
        return getattr(self, name, None)


@dataclass
class EvalConfig:
    """One evaluation protocol: used before and after RL, and by `task=eval` on the benchmarks.

    Single pass per seed, sampled at `temperature` (the rollouts' 1.0 by default, so the
    check measures the policy RL optimises), mean ± std over `seeds`, as the paper's
    5-seed protocol; `do_sample=false` is greedy (one pass, the seed is irrelevant).
    `synthetic` is the training run's held-out split; the other benchmarks load from
    `paths.<name>` (a local copy) or their hub id.
    """

    benchmarks: list[str] = field(default_factory=lambda: ["synthetic"])
    paths: EvalPaths = field(default_factory=EvalPaths)
    limit: int | None = None  # first N records of each benchmark (smoke tests)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    max_new_tokens: int = 64
    batch_size: int = 32
    do_sample: bool = True
    temperature: float = 1.0
    # hf: generate in the job's own processes; vllm: vLLM's offline engine in a child process per engine
    # (GPU machines, requirements-gpu.lock), the paper-scale path for task=eval and a run's before/after
    engine: str = "hf"
    isolate: bool = False  # hf in a child process too (as vllm always is): nothing of training stays resident
    vllm_gpu_memory_utilization: float = 0.9
    vllm_tensor_parallel_size: int = 1  # GPUs per engine; a job of W GPUs runs W / this engines
    # strict: the <answer> span of a well-formed response only, training's rule; lenient adds the \boxed{},
    # "answer is" and last-line fallbacks, for models never trained on the format
    extraction: str = "strict"
    # the paper's Base row: also score the backbone itself, before any cold start (once per backbone and
    # protocol, shared like the before-RL scores), under `base_extraction`: lenient, since an Instruct model
    # was never taught the <answer> span and the strict rule scores it 0
    base: bool = False
    base_extraction: str = "lenient"

    def __post_init__(self) -> None:
        check_choice("eval.extraction", self.extraction, EXTRACTION_RULES)
        check_choice("eval.base_extraction", self.base_extraction, EXTRACTION_RULES)
        check_choice("eval.engine", self.engine, ROLLOUT_ENGINES)
        check_range("eval.vllm_gpu_memory_utilization", self.vllm_gpu_memory_utilization, 0.0, 1.0, low_open=True)
        check_range("eval.vllm_tensor_parallel_size", self.vllm_tensor_parallel_size, 1)
        check_range("eval.max_new_tokens", self.max_new_tokens, 1)
        check_range("eval.batch_size", self.batch_size, 1)
        check_range("eval.temperature", self.temperature, 0.0, low_open=True)
        if not self.benchmarks:
            raise ValueError(f"eval.benchmarks is empty; choose from {', '.join(BENCHMARKS)}")
        for name in self.benchmarks:
            check_choice("eval.benchmarks", name, BENCHMARKS)
        if not self.seeds:
            raise ValueError("eval.seeds is empty; give at least one seed, e.g. [0]")
        if self.limit is not None:
            check_range("eval.limit", self.limit, 1)


@dataclass
class WandbConfig:
    """W&B mirror of the local record. `auto`: online with credentials, else offline."""

    mode: str = "auto"
    project: str = "care"
    entity: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_choice("wandb.mode", self.mode, WANDB_MODES)


@dataclass
class Config:
    task: str = "train"
    seed: int = 0
    checkpoint: str | None = None  # task=eval: weights to evaluate (e.g. a run's policy/); default the backbone
    sweep: str | None = None  # the sweep (paper table) this run belongs to; W&B group
    label: str | None = None  # set to rerun a configuration deliberately under a new run_key
    # a run dir holding another run (another run key or training data, or files that are no run's) is refused;
    # start_over=true moves its contents aside (care.run_dir) and starts this run there; never part of run_key
    start_over: bool = False
    threads: int = 2  # torch intra-op threads; 2 fits this project's CPU machines
    cache_dir: str = ".cache/care"  # tiny backbones and cold-start checkpoints, reused across runs
    # one folder in the layout README step 1 downloads into: fills data.path, cold_start.path and every
    # eval.paths.* still unset after composition (run.py, care.data_root)
    data_root: str | None = None
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    data: DataConfig = field(default_factory=DataConfig)
    cold_start: ColdStartConfig = field(default_factory=ColdStartConfig)
    rl: RLConfig = field(default_factory=RLConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    care: CareOptions = field(default_factory=CareOptions)  # type: ignore[valid-type]
    rgr: RGRConfig = field(default_factory=RGRConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)

    def __post_init__(self) -> None:
        check_choice("task", self.task, TASKS)
        check_range("threads", self.threads, 1)
        batch_geometry(self.rl, self.cluster.gpus)  # a batch that does not divide fails at composition
        if self.task != "eval" and self.backbone.tiny is None and self.backbone.dtype != "float32":
            raise ValueError(f"backbone.dtype={self.backbone.dtype!r} would train {self.backbone.name}'s weights in "
                             "that dtype under AdamW (a 1e-6 update vanishes in bf16); accepted: backbone.dtype="
                             "float32 with rl.compute_dtype=bfloat16 (mixed precision)")


def config_from_dict(values: Any) -> Config:
    """A typed, value-checked Config from a plain dict or DictConfig (a job's composed config, or
    `asdict(cfg)` sent to another process)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), values))


# every config key that names a file or folder (and each of eval.paths): a relative one means the launch directory
PATH_KEYS = ("cache_dir", "checkpoint", "data_root", "backbone.path", "cold_start.path", "cold_start.checkpoint",
             "data.path")


def make_paths_absolute(cfg: Config, absolute) -> Config:
    """`cfg` with every path key (PATH_KEYS and eval.paths.*) passed through `absolute(path) -> str`."""
    keys = [key.rsplit(".", 1) if "." in key else ("", key) for key in PATH_KEYS]
    keys += [("eval.paths", name) for name in vars(cfg.eval.paths)]
    for parent, leaf in keys:
        node = cfg
        for part in filter(None, parent.split(".")):
            node = getattr(node, part)
        if getattr(node, leaf):
            setattr(node, leaf, absolute(getattr(node, leaf)))
    return cfg
