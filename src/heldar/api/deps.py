"""Request dependencies: the kernel and its services, as FastAPI ``Depends`` types."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from heldar.kernel import Kernel


def get_kernel(request: Request) -> Kernel:
    kernel: Kernel = request.app.state.kernel
    return kernel


KernelDep = Annotated[Kernel, Depends(get_kernel)]
