"""The kernel's one error hierarchy.

::

    KernelError                 base; ``message`` is safe to show (credentials redacted)
    ├── NotFound                a named resource does not exist            -> 404
    ├── InvalidInput            a field breaks a rule; names field + rule  -> 422
    │   └── TooLarge            the request body is over its size limit    -> 413
    ├── Unauthorized            a credential (frame ticket) is not valid   -> 401
    ├── Conflict                the request clashes with stored state      -> 409
    ├── Unavailable             a dependency (camera, ffmpeg, disk) failed -> 503
    │   └── Busy                a capacity limit is reached; retry later   -> 503 + Retry-After
    └── ConfigError             the process configuration is unusable      (startup only)

The HTTP mapping lives in one table in ``heldar.api.errors``; the CLI prints the
same messages. Messages say what was wrong and how to fix it.
"""

from __future__ import annotations

from dataclasses import dataclass

from heldar.redaction import redact


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """One broken rule: ``loc`` names the field (e.g. ``("body", "rtsp_port")``)."""

    loc: tuple[str | int, ...]
    msg: str
    type: str = "value_error"

    def as_dict(self) -> dict[str, object]:
        return {"loc": list(self.loc), "msg": redact(self.msg), "type": self.type}


class KernelError(Exception):
    """Base of every error the kernel raises on purpose."""

    def __init__(self, message: str, *, detail: list[FieldProblem] | None = None) -> None:
        self.message = redact(message)
        self.detail: list[FieldProblem] = detail or []
        super().__init__(self.message)


class NotFound(KernelError):
    pass


class InvalidInput(KernelError):
    @classmethod
    def field(
        cls, loc: tuple[str | int, ...], msg: str, type_: str = "value_error"
    ) -> InvalidInput:
        """Error for one field, e.g. ``InvalidInput.field(("body", "address"), "...")``."""
        name = ".".join(str(part) for part in loc if part != "body")
        return cls(f"{name}: {msg}", detail=[FieldProblem(loc, msg, type_)])


class TooLarge(InvalidInput):
    pass


class Unauthorized(KernelError):
    pass


class Conflict(KernelError):
    pass


class Unavailable(KernelError):
    pass


class Busy(Unavailable):
    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ConfigError(KernelError):
    pass
