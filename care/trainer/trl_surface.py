"""Every TRL (and transformers Trainer) internal the CARE trainer relies on, in one place.

CareGRPOTrainer subclasses TRL's GRPOTrainer and works through its private methods: nothing
in TRL promises they keep their names, parameters or the batch keys they read. This module
states that surface — each method we override or call, each attribute we read, each batch key
we rely on, and why — and `surface_problems` checks it against the installed TRL, so an
upgrade fails tests/test_trl_surface.py with a message naming what moved instead of training
silently wrong. (One internal is the model's, not TRL's: the feature hook sits on
`model.get_decoder().norm`; tests/test_trainer.py's feature tests exercise it.) GRPOConfig's
public keyword arguments (care/trainer/build.py) need no entry: GRPOConfig rejects unknown ones.

It also holds the one seam where CARE's own loss mask meets TRL's: CARE keeps the tokens it
trains in `LOSS_MASK` (RGR repair contexts and rollouts outside the subgroup are 0), and the
step's last act, `loss_inputs`, folds it into the `tool_mask` that TRL's `_compute_loss`
multiplies into its loss mask (nothing else in TRL reads `tool_mask` after generation), so TRL's
loss trains CARE's tokens without an override of it.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from dataclasses import dataclass, fields, is_dataclass

import torch

LOSS_MASK = "care_loss_mask"  # [B, T] 0/1, same dtype as completion_mask: the tokens CARE trains


def trained_tokens(batch: dict) -> torch.Tensor:
    """completion_mask x TRL's tool_mask x CARE's LOSS_MASK, each where present: the loss mask TRL will use."""
    mask = batch["completion_mask"]
    for key in ("tool_mask", LOSS_MASK):
        if key in batch:
            mask = mask * batch[key]
    return mask


def loss_inputs(batch: dict) -> dict:
    """The batch as TRL's `_compute_loss` must see it: CARE's mask folded into `tool_mask` (a copy)."""
    if LOSS_MASK not in batch:
        return batch
    folded = dict(batch)
    folded["tool_mask"] = batch[LOSS_MASK] if "tool_mask" not in batch else batch["tool_mask"] * batch[LOSS_MASK]
    return folded


@dataclass(frozen=True)
class Method:
    """A method of GRPOTrainer (or transformers.Trainer) we override, call, or rely on TRL calling.

    `parameters`: the leading parameters (after self) we rely on, in order. `exact`: our override
    takes exactly these, so TRL may pass no other. `called`: CARE calls it (so a new required
    parameter breaks us). `keywords`: parameters we pass by name. `reads`: batch keys (string
    literals) the method's body must still mention.
    """

    name: str
    parameters: tuple[str, ...]
    why: str
    overridden: bool = False
    exact: bool = False
    called: bool = True
    keywords: tuple[str, ...] = ()
    reads: tuple[str, ...] = ()


@dataclass(frozen=True)
class Attribute:
    """An attribute of the trainer (set in GRPOTrainer / Trainer) or of its args (GRPOConfig) we read."""

    name: str
    why: str


# the multimodal inputs of a generation batch that TRL's forward helper takes by keyword
MULTIMODAL_KEYS = ("pixel_values", "image_grid_thw", "num_images", "pixel_attention_mask", "spatial_shapes",
                   "num_tiles", "image_sizes", "token_type_ids", "mm_token_type_ids", "image_position_ids")
FORWARD_KEYWORDS = ("batch_size", "compute_entropy", *MULTIMODAL_KEYS)


def forward_kwargs(batch: dict) -> dict:
    """The multimodal inputs TRL's forward helper takes, from a generation batch."""
    return {key: batch.get(key) for key in MULTIMODAL_KEYS}


def forward_inputs(batch: dict) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(input_ids, attention_mask, logits_to_keep) of a generation batch, as TRL's forward helper takes them."""
    return (torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1),
            torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1), batch["completion_ids"].size(1))


METHODS = (
    Method("_generate_and_score_completions", ("inputs",), overridden=True, exact=True,
           why="in training it hands the rows to CareStep.run, which calls TRL's own (rollouts, rewards, "
               "old and reference log-probs) and edits its output batch before TRL shuffles it",
           reads=("prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "advantages",
                  "num_items_in_batch", "old_per_token_logps", "ref_per_token_logps", "sampling_per_token_logps",
                  "importance_sampling_ratio", "tool_mask")),
    Method("_calculate_rewards", ("inputs", "prompts", "completions", "completion_ids_list"), overridden=True,
           exact=True, why="records the gathered per-function rewards for the step; RGR re-scores repairs with it"),
    Method("_generate", ("prompts",), overridden=True, exact=True,
           why="records the prompts as TRL prepared them (multimodal messages); RGR decodes repairs under them"),
    Method("_get_per_token_logps_and_entropies", ("model", "input_ids", "attention_mask", "logits_to_keep"),
           overridden=True, keywords=FORWARD_KEYWORDS,
           why="CARE's features are read from its old-log-prob call by a hook on the final norm (the first call "
               "in _generate_and_score_completions); it must call the model once per batch_size chunk of rows, "
               "in order; CARE's own features forward and RGR's re-score call it too"),
    Method("_compute_loss", ("model", "inputs"), overridden=False, called=False,
           why="TRL's loss reads CARE's loss mask through tool_mask (loss_inputs), CARE's per-token advantages "
               "and token normaliser, and the log-probs RGR recomputes for spliced rows",
           reads=("tool_mask", "completion_mask", "advantages", "num_items_in_batch", "ref_per_token_logps",
                  "old_per_token_logps")),
    Method("_load_optimizer_and_scheduler", ("checkpoint",), overridden=True, exact=True,
           why="multi-process CPU (gloo) resume maps optimizer state to 'cpu', not 'cpu:0'"),
    Method("_load_from_checkpoint", ("resume_from_checkpoint", "model"), overridden=True, exact=True,
           why="resumes Qwen-VL weights through from_pretrained, strictly (hub names differ from module names)"),
    Method("_tokenize_prompts", ("prompts",),
           why="RGR tokenizes repair prompts as TRL does; returns (prompt_ids, images, multimodal_fields)"),
    Method("_generate_single_turn", ("prompt_ids", "images", "multimodal_fields", "num_generations"),
           why="RGR decodes repairs through TRL's own engine (HF or vLLM); returns (completion_ids, logprobs)"),
)

ATTRIBUTES = (
    Attribute("_tokenizer", "span finding, repair contexts, pad token"),
    Attribute("_metrics", "signal metrics go into TRL's per-mode log buffers: _metrics[mode][name].append"),
    Attribute("num_generations", "group size G"),
    Attribute("reward_weights", "weighted total reward per rollout, as TRL weighs it"),
    Attribute("eos_token_ids", "an empty repair decode still ends with EOS"),
    Attribute("use_vllm", "which generation path RGR reconfigures; whether TRL runs an old-log-prob forward"),
    Attribute("vllm_generation", "RGR sets its temperature, top_p and max_completion_length for one decode"),
    Attribute("vllm_importance_sampling_correction", "whether TRL runs an old-log-prob forward"),
    Attribute("generation_config", "RGR's sampling settings on the HF path"),
    Attribute("generation_kwargs", "RGR's sampling settings on the HF path"),
    Attribute("num_iterations", "whether TRL runs an old-log-prob forward"),
    Attribute("ref_model", "RGR rescores reference log-probs of spliced rows"),
    Attribute("accelerator", "gather, process index, unwrap_model"),
    Attribute("model", "the policy; its decoder's final norm carries the feature hook"),
    Attribute("state", "global_step seeds sampling and subgroup tie-breaks"),
    Attribute("train_dataset", "dynamic sampling draws its extra rounds' prompts from it (rows as the dataloader "
                               "yields them: TRL's collator is the identity)"),
    Attribute("optimizer", "CPU multi-process resume"),
    Attribute("lr_scheduler", "CPU multi-process resume"),
    Attribute("is_fsdp_enabled", "resume falls back to TRL under FSDP"),
    Attribute("is_deepspeed_enabled", "resume falls back to TRL under DeepSpeed"),
)

CONFIG_FIELDS = (
    Attribute("steps_per_generation", "whether TRL runs an old-log-prob forward"),
    Attribute("gradient_accumulation_steps", "whether TRL runs an old-log-prob forward"),
    Attribute("per_device_train_batch_size", "chunk size of CARE's own features forward; rows per round"),
    Attribute("world_size", "CPU multi-process resume"),
    Attribute("device", "CPU multi-process resume"),
)

UTILITIES = (  # module-level helpers imported from trl
    ("trl.trainer.utils", "split_pixel_values_by_grid",
     "care.trainer.batch_rows picks and merges rows of multimodal batches (RGR, dynamic sampling)"),
    ("trl.trainer.utils", "unsplit_pixel_values_by_grid",
     "care.trainer.batch_rows picks and merges rows of multimodal batches (RGR, dynamic sampling)"),
    ("trl.trainer.utils", "use_adapter", "RGR's reference log-probs under PEFT"),
)


# The colocated vLLM engine: TRL builds it by calling the module-level name `LLM` of this module
# from the model directory, with no processor arguments; care.trainer.build.cap_colocated_vllm_images
# rebinds that name to pass the backbone's pixel caps. The call must stay there, through the name.
VLLM_ENGINE = ("trl.generation.vllm_generation", "self.llm = LLM(",
               "rollouts see the backbone's pixel caps (mm_processor_kwargs)")


def vllm_engine_problems(source: str | None = None) -> list[str]:
    """Whether TRL still builds its colocated engine through the module-level `LLM` we rebind."""
    module_name, call, why = VLLM_ENGINE
    if source is None:
        source = inspect.getsource(__import__(module_name, fromlist=["LLM"]))
    if call not in source:
        return [f"{module_name}.LLM: TRL no longer builds its colocated engine with `{call.strip()}` ({why})"]
    return []


def surface_problems(trainer_class: type | None = None, config_class: type | None = None) -> list[str]:
    """What of the stated surface the installed (or given) trainer / config classes no longer offer.

    Each message starts with the method or attribute's name. Empty: the surface holds.
    """
    if trainer_class is None:
        from trl import GRPOTrainer as trainer_class
    if config_class is None:
        from trl import GRPOConfig as config_class
    owner = trainer_class.__name__
    problems = [problem for method in METHODS for problem in _method_problems(trainer_class, method)]
    assigned = _assigned_attributes(trainer_class)
    problems += [f"self.{attribute.name}: {owner} no longer sets it (CARE reads it: {attribute.why})"
                 for attribute in ATTRIBUTES if attribute.name not in assigned]
    known = {f.name for f in fields(config_class)} if is_dataclass(config_class) else set()
    problems += [f"args.{field.name}: {config_class.__name__} no longer has it (CARE reads it: {field.why})"
                 for field in CONFIG_FIELDS if field.name not in known and not hasattr(config_class, field.name)]
    for module_name, name, why in UTILITIES:
        module = __import__(module_name, fromlist=[name])
        if not callable(getattr(module, name, None)):
            problems.append(f"{module_name}.{name}: gone (CARE uses it: {why})")
    if trainer_class.__module__.startswith("trl"):  # the installed TRL, not a test's stand-in
        problems += vllm_engine_problems()
    return problems


def _method_problems(trainer_class: type, method: Method) -> list[str]:
    where = f"{trainer_class.__name__}.{method.name}"
    function = getattr(trainer_class, method.name, None)
    if not callable(function):
        role = "overrides" if method.overridden else "calls" if method.called else "relies on"
        return [f"{where}: missing (CARE {role} it: {method.why})"]
    parameters = list(inspect.signature(function).parameters.values())[1:]  # drop self
    named = [p for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    installed = tuple(p.name for p in named)
    problems = []
    wanted = method.parameters
    if installed[: len(wanted)] != wanted or (method.exact and installed != wanted):
        problems.append(f"{where}: CARE relies on parameters ({', '.join(wanted)}), the installed class has "
                        f"({', '.join(installed)}) — {method.why}")
    missing = [name for name in method.keywords if name not in installed]
    if missing:
        problems.append(f"{where}: no longer takes {', '.join(missing)} — {method.why}")
    required = [p.name for p in named[len(wanted):] if p.default is p.empty and p.name not in method.keywords]
    if required and method.called and not method.exact:
        problems.append(f"{where}: now requires {', '.join(required)}, which CARE does not pass — {method.why}")
    literals = _string_literals(function)
    unread = [key for key in method.reads if key not in literals]
    if unread:
        problems.append(f"{where}: no longer mentions batch key(s) {', '.join(unread)} — {method.why}")
    return problems


def _string_literals(function) -> set[str]:
    try:
        source = textwrap.dedent(inspect.getsource(inspect.unwrap(function)))
    except (OSError, TypeError):
        return set()
    return {node.value for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)}


def _assigned_attributes(trainer_class: type) -> set[str]:
    """Names the class hierarchy defines: class members, and `self.<name> = ...` targets in its sources."""
    names = set(dir(trainer_class))
    for klass in trainer_class.__mro__:
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) \
                    and isinstance(node.value, ast.Name) and node.value.id == "self":
                names.add(node.attr)
    return names
