"""Reflection-Guided Resampling, the text side (docs/method.md §7): cue templates and repair contexts.

A repair context is the failed response with a cue inserted just before `</think>`, cut right
after `<answer>`, so one decode writes a new final answer in the light of the cue. Only the
failed response and the cue enter it: the builders take no record, so no gold answer or gold
reasoning can reach the policy through them. Pure string functions; the trainer side is
`care.trainer.repair`.
"""

from __future__ import annotations

THINK_OPEN, THINK_CLOSE, ANSWER_OPEN = "<think>", "</think>", "<answer>"

# The reference code's structured cue, and the paper's wording of it. `rgr_cue=custom` takes
# `rgr.cue_text` instead. The synthetic task's cold-start reflection traces use `structured`.
CUE_TEMPLATES = {
    "structured": "\n<repair>\n- Mistake:\n- Fix:\n- Corrected final answer:\n</repair>\n",
    "paper": " Your previous reasoning had an error. Find the mistake, correct it, and re-derive. Keep it concise. ",
}
CUE_CHOICES = (*CUE_TEMPLATES, "custom")


def cue_text(name: str, custom: str | None = None) -> str:
    """The cue for template `name` (`custom`: the user's text)."""
    if name == "custom":
        if not custom:
            raise ValueError("rgr.cue=custom needs rgr.cue_text (the cue to insert before </think>), got none")
        return custom
    if name not in CUE_TEMPLATES:
        raise ValueError(f"rgr.cue must be one of {', '.join(CUE_CHOICES)}; got {name!r}")
    return CUE_TEMPLATES[name]


def repair_context(response: str, cue: str) -> str:
    """`response` with `cue` just before `</think>`, cut after `<answer>`.

    Missing tags are synthesised the way `care.trainer.spans` reads them: no `</think>` ends the
    think at `<answer>` (or the end); no `<think>` at all makes everything before `<answer>` the
    reasoning; no `<answer>` after the think appends one. An empty cue gives the cue-less
    resample of the same prefix (`rgr.variant=no_cue`).
    """
    open_at = response.find(THINK_OPEN)
    close_at = response.find(THINK_CLOSE, open_at + len(THINK_OPEN) if open_at >= 0 else 0)
    if close_at >= 0:
        reasoning, rest = response[:close_at], response[close_at + len(THINK_CLOSE):]
    else:
        answer_at = response.find(ANSWER_OPEN, open_at + len(THINK_OPEN) if open_at >= 0 else 0)
        end = answer_at if answer_at >= 0 else len(response)
        reasoning, rest = response[:end], response[end:]
        if open_at < 0:
            reasoning = THINK_OPEN + reasoning
    answer_at = rest.find(ANSWER_OPEN)
    between = rest[:answer_at] if answer_at >= 0 else ""
    between = between if not between.strip() else ""  # keep a separator, never stray text
    return f"{reasoning}{cue}{THINK_CLOSE}{between}{ANSWER_OPEN}"
