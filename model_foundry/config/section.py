"""What every config section is: a pydantic model that forbids unknown keys, and its key aliases."""
from __future__ import annotations

from pydantic import AliasChoices, BaseModel, ConfigDict


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_assignment=True)


def alias(*names: str) -> AliasChoices:
    """Accept the canonical name of a key (first) and its alternative key names."""
    return AliasChoices(*names)
