"""Sampler settings: how the next token is chosen during generation."""

from __future__ import annotations

from dataclasses import dataclass, replace

from tlcore.errors import StudioError

SAMPLERS = ("greedy", "top_k", "top_p", "beam", "random")
# These always pick the same continuation for the same prompt: several "samples"
# side by side would be copies of one another.
DETERMINISTIC_SAMPLERS = ("greedy", "beam")


@dataclass
class SamplerConfig:
    """How tokens are chosen during generation.

    Attributes:
        sampler: ``"greedy"``, ``"top_k"``, ``"top_p"``, ``"beam"`` or ``"random"``.
        k: candidates kept by top-k.
        p: probability mass kept by top-p (nucleus).
        num_beams: beams of beam search.
        temperature: > 1 flattens, < 1 sharpens the distribution (sampling samplers).
        max_length: total length in tokens, prompt included.
        seed: makes sampling reproducible.
    """

    sampler: str = "top_k"
    k: int = 40
    p: float = 0.9
    num_beams: int = 4
    temperature: float = 1.0
    max_length: int = 64
    seed: int = 42

    def validate(self, context_length: int) -> None:
        if self.sampler not in SAMPLERS:
            raise StudioError(f"Unknown sampler. Expected one of {list(SAMPLERS)}. Received: sampler={self.sampler!r}.")
        if not (isinstance(self.max_length, int) and 1 <= self.max_length <= context_length):
            raise StudioError(
                f"`max_length` (prompt plus new tokens) should be between 1 and the model's context of "
                f"{context_length} tokens. Received: max_length={self.max_length!r}."
            )
        if not 1 <= self.k <= 10_000:
            raise StudioError(f"`k` should be between 1 and 10000. Received: k={self.k}.")
        if not 0.0 < self.p <= 1.0:
            raise StudioError(f"`p` should be in (0, 1]. Received: p={self.p}.")
        if not 1 <= self.num_beams <= 16:
            raise StudioError(f"`num_beams` should be between 1 and 16. Received: num_beams={self.num_beams}.")
        if not 0.05 <= self.temperature <= 5.0:
            raise StudioError(f"`temperature` should be between 0.05 and 5. Received: temperature={self.temperature}.")

    @property
    def deterministic(self) -> bool:
        """True when the seed cannot change the output (greedy, beam)."""
        return self.sampler in DETERMINISTIC_SAMPLERS

    def side_by_side(self, samples: int) -> list[SamplerConfig]:
        """Settings for ``samples`` texts side by side: one seed each (``seed``, ``seed + 1``…);
        one setting for a deterministic sampler, whose samples would be copies."""
        if self.deterministic:
            return [self]
        return [replace(self, seed=self.seed + index) for index in range(samples)]

    def graph_key(self) -> tuple:
        """The settings baked into a compiled generate function: everything but the seed.

        The seed lives in a variable of the sampler, so one compiled function serves
        every seed; a different k, p, beam count or temperature needs its own.
        """
        if self.sampler == "greedy":
            return ("greedy",)
        if self.sampler == "beam":
            return ("beam", self.num_beams)
        if self.sampler == "top_k":
            return ("top_k", self.k, self.temperature)
        if self.sampler == "top_p":
            return ("top_p", self.p, self.temperature)
        return ("random", self.temperature)

    def make_sampler(self):
        import keras_hub

        samplers = keras_hub.samplers
        if self.sampler == "greedy":
            return samplers.GreedySampler()
        if self.sampler == "beam":
            return samplers.BeamSampler(num_beams=self.num_beams)
        if self.sampler == "top_k":
            return samplers.TopKSampler(k=self.k, seed=self.seed, temperature=self.temperature)
        if self.sampler == "top_p":
            return samplers.TopPSampler(p=self.p, seed=self.seed, temperature=self.temperature)
        return samplers.RandomSampler(seed=self.seed, temperature=self.temperature)


def reseed(sampler, seed: int) -> None:
    """Puts a sampler's random state back to where ``seed`` starts it.

    A compiled generate function is reused across clicks; without this, the same
    seed would give a different text on every click.
    """
    import numpy as np

    for state in sampler.variables:
        state.assign(np.array([seed, 0], dtype=state.dtype))
