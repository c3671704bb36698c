"""The one pydantic base for user-written configs: unknown keys are errors, so a typo never silently does nothing."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Frozen model that forbids unknown keys (task specs, mixtures, ablations)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class StrictMutable(BaseModel):
    """Like `Strict` but assignable (validated on assignment), for configs that overrides edit in place."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
