"""Domain error categories. Pure: no grpc here; tally.grpc_errors maps them to status codes."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import ClassVar


class Category(enum.Enum):
    INVALID = "invalid"
    NOT_FOUND = "not_found"
    ALREADY_EXISTS = "already_exists"
    PRECONDITION = "precondition"
    UNAVAILABLE = "unavailable"
    EXHAUSTED = "exhausted"
    UNAUTHENTICATED = "unauthenticated"
    PERMISSION_DENIED = "permission_denied"


@dataclass(frozen=True)
class Violation:
    """One problem with one field: `field` is a path such as ``events[3].timestamp``."""

    field: str
    description: str
    reason: str = ""


@dataclass
class DomainError(Exception):
    """Base of every error a use case raises on purpose."""

    message: str
    violations: list[Violation] = field(default_factory=list)
    # A stable machine-readable reason, such as "IDEMPOTENCY_KEY_CONFLICT".
    reason: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    # Seconds after which a retry may succeed (EXHAUSTED, UNAVAILABLE).
    retry_after_seconds: float | None = None

    category: ClassVar[Category] = Category.INVALID

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


class InvalidInput(DomainError):
    category = Category.INVALID


class NotFound(DomainError):
    category = Category.NOT_FOUND


class AlreadyExists(DomainError):
    category = Category.ALREADY_EXISTS


class FailedPrecondition(DomainError):
    category = Category.PRECONDITION


class Unavailable(DomainError):
    category = Category.UNAVAILABLE


class ResourceExhausted(DomainError):
    category = Category.EXHAUSTED


class Unauthenticated(DomainError):
    category = Category.UNAUTHENTICATED


class PermissionDenied(DomainError):
    category = Category.PERMISSION_DENIED


class Violations:
    """Collects every problem of an input, so a validation pass reports all at once."""

    def __init__(self, prefix: str = "") -> None:
        self._prefix = prefix
        self.items: list[Violation] = []

    def add(self, field_path: str, description: str, reason: str = "") -> None:
        path = f"{self._prefix}.{field_path}" if self._prefix and field_path else (self._prefix or field_path)
        self.items.append(Violation(path, description, reason))

    def extend(self, others: "list[Violation] | Violations") -> None:
        self.items.extend(others.items if isinstance(others, Violations) else others)

    def nested(self, prefix: str) -> "Violations":
        """A collector whose fields are reported under ``prefix``; merge it back with extend."""
        full = f"{self._prefix}.{prefix}" if self._prefix else prefix
        return Violations(full)

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_any(self, message: str = "invalid request") -> None:
        if self.items:
            raise InvalidInput(message, violations=list(self.items))
