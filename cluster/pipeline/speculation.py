"""Whether and how a pipeline speculates (issue 18), decided once at bring-up from the inventory and
what every stage said it can undo, and each session's drafter.

A stream speculates only while it decodes alone: a speculative step carries several inputs, so it
runs outside the decode batches, and with other sessions decoding the batch is the better use of
the ring.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

from cluster.pipeline.draft_length import DraftLength, TripCosts
from cluster.pipeline.prompt_lookup import PromptLookup
from proto import boltpipe_pb2 as pb

if TYPE_CHECKING:  # the draft model needs MLX; prompt lookup and the inventory do not
    from cluster.pipeline.draft_model import DraftModel

DRAFTERS = ("prompt_lookup", "draft_model", "off")


@dataclass
class SpeculationPlan:
    drafter: str                   # "prompt_lookup"; "off": never
    max_draft: int = 4
    horizon: int = 0               # 0: any position; N: a speculative step must end at or before N
    problem: str = ""              # why the pipeline cannot speculate (drafter is then "off")
    costs: TripCosts = field(default_factory=TripCosts)
    draft_model: "DraftModel | None" = None

    @property
    def on(self) -> bool:
        return self.drafter != "off"


def plan_speculation(drafter: str, max_draft: int, infos: Sequence[pb.NodeInfo],
                     draft_model: "DraftModel | None" = None) -> SpeculationPlan:
    """The plan for a pipeline whose stages sent `infos` (their NodeInfo after loading)."""
    if drafter == "draft_model" and draft_model is None:
        raise ValueError("the draft_model drafter needs the draft model")
    if drafter == "off" or max_draft < 1:
        return SpeculationPlan("off", max_draft)
    horizon = 0
    for stage, info in enumerate(infos):
        if info.rollback_horizon < 0:
            problem = info.rollback_problem or "the stage cannot roll its caches back"
            return SpeculationPlan("off", max_draft, problem=f"stage {stage} ({info.node_id}): {problem}")
        if info.rollback_horizon > 0:
            horizon = info.rollback_horizon if horizon == 0 else min(horizon, info.rollback_horizon)
    return SpeculationPlan(drafter, max_draft, horizon, draft_model=draft_model)


class SessionDrafter:
    """One session's drafts, as many as its DraftLength says, within the pipeline's horizon and the
    tokens the request may still get: prompt lookup over the prompt and what it generated, or the
    draft model's greedy guesses."""

    def __init__(self, plan: SpeculationPlan, history: Sequence[int]):
        self.plan = plan
        self.history = list(history)
        # A match of one token is a weak guess (free text repeats single tokens all the time): two or three.
        self.lookup = PromptLookup(self.history, min_ngram=2) if plan.drafter == "prompt_lookup" else None
        self.model = plan.draft_model.session() if plan.drafter == "draft_model" else None
        self.length = DraftLength(plan.max_draft, plan.costs)

    def add(self, tokens: Sequence[int]) -> None:
        self.history.extend(tokens)
        if self.lookup is not None:
            self.lookup.extend(tokens)

    async def propose(self, position: int, remaining: int) -> list[int]:
        """Drafts to follow the newest token (the last one added), for a step at `position` whose
        first input is that token and after which the request may take `remaining` tokens."""
        k = min(self.length.choose(), remaining - 1)
        if self.plan.horizon:
            k = min(k, self.plan.horizon - position - 1)
        if k <= 0:
            return []
        if self.lookup is not None:
            return self.lookup.propose(k)
        drafts, seconds_each = await self.model.propose(self.history, k)
        self.plan.costs.observe_drafting(seconds_each)
        return drafts

    def trip(self, inputs: int, drafted: int, kept: int, seconds: float | None) -> None:
        """What a trip of `inputs` inputs kept, and how long it took (None: not a clean timing)."""
        if seconds is not None:
            self.plan.costs.observe(inputs, seconds)
        self.length.observe(drafted, kept)
