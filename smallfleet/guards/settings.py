"""Guard settings from the ``[guards]`` config section (and SMALLFLEET_GUARD / SMALLFLEET_POLICY)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MODES = ("block", "flag", "confirm", "off")


@dataclass(frozen=True)
class GuardSettings:
    mode: str = "block"            # block: drop a denied call and explain; flag: pass it, mark it; confirm: ask first
    policy_file: Path | None = None  # TOML tool declarations; without one, capabilities are guessed from names
    detector: bool = True          # the injection detector as a second layer
    trusted_tools: tuple[str, ...] = ()  # tools whose results are trusted content (your own systems)
    datamark: bool = False         # show tool output to models datamarked (spotlighting); off: small models lose accuracy

    @property
    def enabled(self) -> bool:
        return self.mode != "off"
