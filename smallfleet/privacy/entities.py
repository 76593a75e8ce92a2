"""What a detected piece of personal data looks like, and the entity types smallfleet knows."""

from __future__ import annotations

from dataclasses import dataclass

#: Entity types, named as Presidio names them where both have one.
ENTITY_TYPES: tuple[str, ...] = (
    "PERSON", "LOCATION", "ORGANIZATION", "NRP", "EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE",
    "US_SSN", "US_DRIVER_LICENSE", "IP_ADDRESS", "URL", "DATE_TIME", "STREET_ADDRESS", "ZIP_CODE", "AGE", "TITLE",
    "SECRET", "ID_NUMBER", "USERNAME", "APP_ID",
)


@dataclass(frozen=True)
class Entity:
    """A span of ``text[start:end]`` holding personal data of ``type``."""

    type: str
    start: int
    end: int
    text: str
    score: float
    source: str  # "pattern" | "ner" | "context"

    def shifted(self, offset: int) -> Entity:
        return Entity(self.type, self.start + offset, self.end + offset, self.text, self.score, self.source)

    def as_dict(self) -> dict[str, object]:
        return {"type": self.type, "start": self.start, "end": self.end, "text": self.text, "score": round(self.score, 3)}
