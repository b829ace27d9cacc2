"""How many tokens to draft for the next trip around the ring: a pure controller.

A trip that carries k drafts gives 1 + (the drafts kept) tokens and costs what a step of k + 1
inputs costs. With a share `a` of drafted tokens kept (each independently, a geometric run), the
expected tokens of a trip are 1 + a + ... + a^k; the controller picks the k (0..max_draft) with the
most tokens per second, from the acceptance it has seen (a moving average) and the trip times the
pipeline has shown for each number of inputs (shared by all sessions: a property of the pipeline,
not of the text; the first trip the pipeline makes is a plain one, the yardstick). On memory-bound machines a trip of 5 inputs costs about one of 1, so k stays
high while drafts are kept; where they are not, k falls to 0 (one token per trip), and a probe of
one draft every `probe_every` trips notices when drafting starts to pay again (unless even drafts
that were all kept could not pay, as with a draft model slower than the pipeline).
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Before a step of n inputs was timed: assume each extra input costs this share of a one-input trip
# (optimistic, so that the first drafts are tried and then judged on measured times).
UNMEASURED_EXTRA_COST = 0.1


@dataclass
class TripCosts:
    """Moving averages of trip seconds by the number of inputs a step carried."""

    smoothing: float = 0.2
    seconds: dict[int, float] = field(default_factory=dict)
    drafting_s: float = 0.0  # what making one draft costs (a draft model's step; prompt lookup: ~0)

    def observe(self, inputs: int, seconds: float) -> None:
        old = self.seconds.get(inputs)
        self.seconds[inputs] = seconds if old is None else old + self.smoothing * (seconds - old)

    def observe_drafting(self, seconds_each: float) -> None:
        self.drafting_s = seconds_each if not self.drafting_s else (
            self.drafting_s + self.smoothing * (seconds_each - self.drafting_s))

    def relative(self, inputs: int) -> float:
        """A trip of `inputs` inputs, with the drafts it carries made first, in units of a one-input trip."""
        one = self.seconds.get(1)
        if inputs == 1:
            return 1.0
        if one is None or one <= 0:
            return 1.0 + UNMEASURED_EXTRA_COST * (inputs - 1)
        return self._trip(inputs, one) / one + (inputs - 1) * self.drafting_s / one

    def _trip(self, inputs: int, one: float) -> float:
        if inputs in self.seconds:
            return self.seconds[inputs]
        # Between or beyond measured sizes: a straight line through the nearest ones below and above.
        below = max((n for n in self.seconds if n < inputs), default=1)
        above = min((n for n in self.seconds if n > inputs), default=None)
        per_input = ((self.seconds[above] - self.seconds[below]) / (above - below) if above is not None
                     else max(UNMEASURED_EXTRA_COST * one, (self.seconds[below] - one) / max(1, below - 1)))
        return self.seconds[below] + per_input * (inputs - below)


def expected_tokens(acceptance: float, drafts: int) -> float:
    """Tokens a trip with `drafts` drafts gives when each is kept with probability `acceptance`."""
    return sum(acceptance ** i for i in range(drafts + 1))


@dataclass
class DraftLength:
    max_draft: int
    costs: TripCosts
    acceptance: float = 0.5        # prior chance that a draft judged is kept
    smoothing: float = 0.3
    probe_every: int = 16
    _trips_without: int = 0

    def choose(self) -> int:
        """Drafts for the next trip (0: a plain step)."""
        if 1 not in self.costs.seconds:
            return 0  # a plain trip first: what drafting costs is judged against it
        best = max(range(self.max_draft + 1),
                   key=lambda k: (expected_tokens(self.acceptance, k) / self.costs.relative(k + 1), -k))
        if best == 0 and self.max_draft > 0 and self._could_pay():
            self._trips_without += 1
            if self._trips_without >= self.probe_every:
                self._trips_without = 0
                return 1
        return best

    def _could_pay(self) -> bool:
        """Whether drafts that were all kept would beat one token per trip (a draft model slower
        than the pipeline never does: then there is nothing to probe for)."""
        return any(k + 1 > self.costs.relative(k + 1) for k in range(1, self.max_draft + 1))

    def observe(self, drafted: int, kept: int) -> None:
        """What a trip that carried `drafted` drafts kept (a trip without drafts teaches nothing)."""
        if drafted <= 0:
            return
        self._trips_without = 0
        # Drafts are judged in order until the first miss: the kept ones and that miss were trials.
        trials = kept + (1 if kept < drafted else 0)
        self.acceptance += self.smoothing * (kept / trials - self.acceptance)
