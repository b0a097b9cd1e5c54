"""Request dependencies: the kernel and its services, as FastAPI ``Depends`` types."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Query, Request
from pydantic import AwareDatetime

from heldar.errors import InvalidInput
from heldar.kernel import Kernel


def get_kernel(request: Request) -> Kernel:
    kernel: Kernel = request.app.state.kernel
    return kernel


KernelDep = Annotated[Kernel, Depends(get_kernel)]


@dataclass(frozen=True, slots=True)
class TimeRange:
    """``from`` and ``to`` of a list route: RFC 3339 with a zone, both inclusive, ordered."""

    since: datetime | None
    until: datetime | None


def get_time_range(
    since: Annotated[AwareDatetime | None, Query(alias="from")] = None,
    until: Annotated[AwareDatetime | None, Query(alias="to")] = None,
) -> TimeRange:
    if since is not None and until is not None and since > until:
        raise InvalidInput.field(("query", "to"), "must not be earlier than from")
    return TimeRange(since, until)


TimeRangeDep = Annotated[TimeRange, Depends(get_time_range)]
