"""The TRL internals CARE relies on are stated in one module and hold for the installed TRL.

A TRL upgrade that renames a method, changes its parameters, stops setting an attribute or stops
reading a batch key fails here with a message naming it; the fakes below show each check can fail.
"""

import ast
import inspect
from pathlib import Path

import pytest
import torch
from trl import GRPOConfig, GRPOTrainer

from care.trainer import trl_surface
from care.trainer.care_trainer import CareGRPOTrainer
from care.trainer.trl_surface import LOSS_MASK, loss_inputs, surface_problems, trained_tokens

HERE = Path(trl_surface.__file__).parent
TRAINER_SOURCE = HERE / "care_trainer.py"  # the trainer is `self`
# collaborators the trainer hands itself to: there the trainer is `self.trainer`, or a local `trainer`
COLLABORATOR_SOURCES = [HERE / name for name in ("care_step.py", "repair.py", "features.py")]


def test_the_installed_trl_offers_every_stated_method_attribute_and_batch_key():
    problems = surface_problems()
    assert problems == [], "TRL's surface moved:\n" + "\n".join(problems)


def test_a_changed_signature_is_reported_by_method_name():
    class Changed(GRPOTrainer):
        def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list, scale):  # TRL would pass scale
            return None

    problems = surface_problems(Changed)
    assert len(problems) == 1, problems
    assert problems[0].startswith(
        "Changed._calculate_rewards: CARE relies on parameters (inputs, prompts, completions, completion_ids_list)")
    assert "(inputs, prompts, completions, completion_ids_list, scale)" in problems[0]


def test_a_new_parameter_of_a_method_only_trl_calls_is_no_problem():
    class Wider(GRPOTrainer):
        def _compute_loss(self, model, inputs, scale):
            return inputs["tool_mask"], inputs["completion_mask"], inputs["advantages"], \
                inputs["num_items_in_batch"], inputs["ref_per_token_logps"], inputs["old_per_token_logps"]

    assert surface_problems(Wider) == []


def test_a_dropped_forward_keyword_and_a_new_required_parameter_are_reported():
    class Narrower(GRPOTrainer):
        def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, chunk,
                                               batch_size=None, compute_entropy=False, pixel_values=None):
            return None

    problems = surface_problems(Narrower)
    assert any(p.startswith("Narrower._get_per_token_logps_and_entropies: no longer takes image_grid_thw")
               for p in problems), problems
    assert any(p.startswith("Narrower._get_per_token_logps_and_entropies: now requires chunk") for p in problems)


def test_a_batch_key_the_loss_no_longer_reads_is_reported():
    class NoToolMask(GRPOTrainer):
        def _compute_loss(self, model, inputs):
            return inputs["completion_mask"], inputs["advantages"], inputs["num_items_in_batch"], \
                inputs["ref_per_token_logps"], inputs["old_per_token_logps"]

    assert surface_problems(NoToolMask) == [
        f"NoToolMask._compute_loss: no longer mentions batch key(s) tool_mask — {_why('_compute_loss')}"]


def test_missing_methods_attributes_and_config_fields_are_reported_by_name():
    class Bare:
        def _generate(self, prompts):
            self.num_generations = 4

    class BareConfig:
        steps_per_generation = 1

    problems = surface_problems(Bare, BareConfig)
    assert any(p.startswith("Bare._compute_loss: missing (CARE relies on it") for p in problems)
    assert any(p.startswith("Bare._calculate_rewards: missing (CARE overrides it") for p in problems)
    assert any(p.startswith("Bare._tokenize_prompts: missing (CARE calls it") for p in problems)
    assert not any(p.startswith("Bare._generate:") for p in problems)
    assert any(p.startswith("self.reward_weights: Bare no longer sets it") for p in problems)
    assert not any(p.startswith("self.num_generations") for p in problems)
    assert any(p.startswith("args.per_device_train_batch_size: BareConfig no longer has it") for p in problems)
    assert not any(p.startswith("args.steps_per_generation") for p in problems)


def _trainer_attributes(source: Path, is_trainer) -> tuple[set[str], set[str], set[str]]:
    """(attributes read, attributes assigned, args fields read) on the trainer in `source`."""
    read, assigned, args_read = set(), set(), set()
    for node in ast.walk(ast.parse(source.read_text())):
        if not isinstance(node, ast.Attribute):
            continue
        if is_trainer(node.value):
            (assigned if isinstance(node.ctx, ast.Store) else read).add(node.attr)
        elif isinstance(node.value, ast.Attribute) and node.value.attr == "args" and is_trainer(node.value.value):
            args_read.add(node.attr)
    return read, assigned, args_read


def _is_self(node) -> bool:
    return isinstance(node, ast.Name) and node.id == "self"


def _is_handed_trainer(node) -> bool:
    return (isinstance(node, ast.Name) and node.id == "trainer") or \
        (isinstance(node, ast.Attribute) and node.attr == "trainer" and _is_self(node.value))


def test_every_trl_internal_the_trainer_touches_is_stated():
    """Our overrides match the stated signatures; every inherited trainer.X / trainer.args.X we use is listed."""
    stated_methods = {m.name: m for m in trl_surface.METHODS}
    for name, member in vars(CareGRPOTrainer).items():
        if callable(member) and name.startswith("_") and not name.startswith("__") and hasattr(GRPOTrainer, name):
            assert stated_methods.get(name) and stated_methods[name].overridden, f"override {name} is not stated"
        if name in stated_methods and stated_methods[name].overridden:
            ours = tuple(inspect.signature(member).parameters)[1:]
            stated = stated_methods[name].parameters
            assert ours[: len(stated)] == stated, f"CareGRPOTrainer.{name} takes {ours}, stated {stated}"

    read, assigned, args_read = _trainer_attributes(TRAINER_SOURCE, _is_self)
    ours = set(vars(CareGRPOTrainer)) | assigned  # what the trainer class itself defines
    for source in COLLABORATOR_SOURCES:
        handed_read, handed_assigned, handed_args = _trainer_attributes(source, _is_handed_trainer)
        read |= handed_read | handed_assigned  # a collaborator setting a TRL attribute relies on it too
        args_read |= handed_args
    inherited = read - ours
    stated = set(stated_methods) | {a.name for a in trl_surface.ATTRIBUTES} | {"args"}
    assert inherited - stated == set(), "TRL attributes used but not stated in care/trainer/trl_surface.py"
    assert args_read - {f.name for f in trl_surface.CONFIG_FIELDS} == set()
    assert all(hasattr(GRPOConfig, f.name) or f.name in GRPOConfig.__dataclass_fields__
               for f in trl_surface.CONFIG_FIELDS)
    # and the list holds nothing we no longer use (the resume overrides live in care/checkpoints.py)
    resume_only = {"optimizer", "lr_scheduler", "is_fsdp_enabled", "is_deepspeed_enabled", "world_size", "device"}
    unused = {a.name for a in (*trl_surface.ATTRIBUTES, *trl_surface.CONFIG_FIELDS)} - read - args_read - resume_only
    assert unused == set(), f"stated in care/trainer/trl_surface.py but no longer used: {sorted(unused)}"


def test_the_loss_view_folds_cares_mask_into_a_copy_and_keeps_trls_tool_mask():
    completion = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]])
    tool = torch.tensor([[1, 0, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]])
    care = torch.tensor([[1, 1, 1, 0], [0, 0, 0, 0], [0, 1, 1, 1]])
    batch = {"completion_mask": completion, "tool_mask": tool, LOSS_MASK: care}
    view = loss_inputs(batch)
    assert view is not batch and batch["tool_mask"] is tool
    assert torch.equal(completion * view["tool_mask"], completion * tool * care)
    assert torch.equal(trained_tokens(batch), completion * tool * care)
    assert int(trained_tokens(batch).sum()) == 2 + 0 + 3
    # without TRL's tool_mask, CARE's mask is what TRL sees; without CARE's, the batch is untouched
    assert torch.equal(loss_inputs({"completion_mask": completion, LOSS_MASK: care})["tool_mask"], care)
    plain = {"completion_mask": completion}
    assert loss_inputs(plain) is plain and torch.equal(trained_tokens(plain), completion)


def _why(name):
    return next(m.why for m in trl_surface.METHODS if m.name == name)



def test_the_colocated_vllm_engine_gets_the_backbone_pixel_caps(monkeypatch):
    """TRL builds its colocated engine through vllm_generation.LLM: the caps reach it, once, however
    often a trainer is built; a TRL that stops building it there fails the surface check by name."""
    import trl.generation.vllm_generation as generation

    from care.trainer.build import cap_colocated_vllm_images
    from care.trainer.trl_surface import vllm_engine_problems

    built = []

    def fake_engine(**kwargs):
        built.append(kwargs)

    monkeypatch.setattr(generation, "LLM", fake_engine, raising=False)
    cap_colocated_vllm_images(12_544, 50_176)
    cap_colocated_vllm_images(12_544, 50_176)  # a second trainer in the same process
    generation.LLM(model="policy", tensor_parallel_size=1)
    assert built == [{"model": "policy", "tensor_parallel_size": 1,
                      "mm_processor_kwargs": {"min_pixels": 12_544, "max_pixels": 50_176}}]
    assert vllm_engine_problems() == []
    moved = vllm_engine_problems("self.engine = build_engine(model=model.name_or_path)")
    assert len(moved) == 1 and moved[0].startswith("trl.generation.vllm_generation.LLM:")


def test_colocated_vllm_without_vllm_is_refused_naming_the_fallback(monkeypatch):
    import trl.generation.vllm_generation as generation

    from care.trainer.build import cap_colocated_vllm_images

    monkeypatch.delattr(generation, "LLM", raising=False)
    with pytest.raises(ValueError, match="rollout=hf"):
        cap_colocated_vllm_images(1, 2)
