"""The base of every settings section: frozen-free pydantic models that reject unknown keys."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")
