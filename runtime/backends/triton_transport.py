"""What the ``triton`` backend needs from a server, whatever the protocol: a model's config
and one inference, each with a timeout, and a one-line :class:`TritonUnavailable` when the
server cannot be reached or says no. An inference first reconnects with back-off for
``retry_s`` (0.1 s doubling to 2 s), so a restarted server loses no frame; reading a config
is not retried (a wrong address fails at once).

:mod:`.triton_http` (KServe v2 REST with binary tensors, httpx) and :mod:`.triton_grpc`
(KServe v2 gRPC, tritonclient) are the two transports.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import numpy as np

from adedge.errors import AdedgeError

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_RETRY_S = 30.0
BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 2.0
# Triton's datatype names and numpy's (model_config.proto's TYPE_* without the prefix)
DTYPES = {
    "FP32": np.float32,
    "FP16": np.float16,
    "FP64": np.float64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "BOOL": np.bool_,
}
T = TypeVar("T")


class TritonUnavailable(AdedgeError):
    """The server cannot be reached (``transport``), or answers with an error."""

    transport = False


def unreachable(target: str, why: str) -> TritonUnavailable:
    error = TritonUnavailable(
        f"Triton at {target} is unreachable ({why})",
        "start the server, or check the host and port of --backend",
    )
    error.transport = True
    return error


def too_slow(target: str, what: str) -> TritonUnavailable:
    return TritonUnavailable(
        f"Triton at {target} did not answer {what} in time",
        "check the server's load and its queue, or raise the timeout",
    )


def datatype(dtype: np.dtype) -> str:
    for name, kind in DTYPES.items():
        if np.dtype(kind) == dtype:
            return name
    raise AdedgeError(f"Triton has no datatype for numpy {dtype}")


class TritonTransport:
    """The calls of the module docstring; subclasses speak one protocol. Thread-safe: the
    threads of a stream or of the service share one."""

    def __init__(self, target: str, timeout: float, retry_s: float) -> None:
        self.target = target  # what messages name: http://host:port or host:port
        self.timeout = timeout
        self.retry_s = retry_s
        self.reconnects = 0  # transport errors survived by a retry

    def retrying(self, call: Callable[[], T]) -> T:
        """``call()``, retried with back-off while the server is unreachable (not on a
        timeout or an error answer: the server is there and said no)."""
        deadline = time.monotonic() + self.retry_s
        pause = BACKOFF_FIRST_S
        while True:
            try:
                return call()
            except TritonUnavailable as error:
                if not error.transport or time.monotonic() + pause > deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, BACKOFF_MAX_S)
            self.reconnects += 1

    def config(self, model: str) -> dict[str, Any]:
        """The model's config as JSON (field names as in model_config.proto)."""
        raise NotImplementedError

    def infer_once(
        self, model: str, inputs: Mapping[str, np.ndarray], outputs: list[str]
    ) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def infer(
        self, model: str, inputs: Mapping[str, np.ndarray], outputs: list[str], retry: bool = True
    ) -> dict[str, np.ndarray]:
        """One request; ``retry``: reconnect with back-off while the server is unreachable."""
        if not retry:
            return self.infer_once(model, inputs, outputs)
        return self.retrying(lambda: self.infer_once(model, inputs, outputs))

    def close(self) -> None:
        """Close the connections (a server shutting down waits for keep-alive ones)."""
