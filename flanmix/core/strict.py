"""The one pydantic base for user-written configs: unknown keys are errors, so a typo never silently does nothing;
and a number must be finite (`.inf` or `.nan` as a weight, a rate or a count is never meant)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Frozen model that forbids unknown keys and non-finite floats (task specs, mixtures, ablations)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class StrictMutable(BaseModel):
    """Like `Strict` but assignable (validated on assignment), for configs that overrides edit in place."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)
