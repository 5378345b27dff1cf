"""KServe v2 gRPC to Triton (``triton://HOST:8001/MODEL``) through tritonclient's gRPC
client (``pip install adedge[triton-client]``; torch-free, on aarch64 too). gRPC keeps one
HTTP/2 connection per server and sends tensors as raw bytes; DeepStream's ``nvinferserver``
and most Triton clients use it. A gRPC channel reconnects by itself; what is lost while the
server is away is retried as every transport retries (:mod:`.triton_transport`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from adedge.errors import AdedgeError
from adedge.runtime.backends.triton_transport import (
    BACKOFF_FIRST_S,
    BACKOFF_MAX_S,
    TritonTransport,
    TritonUnavailable,
    datatype,
    too_slow,
    unreachable,
)

# gRPC status codes that mean "no server there (now)": the call is retried, or falls back
UNREACHABLE = {"StatusCode.UNAVAILABLE", "StatusCode.CANCELLED"}
TIMED_OUT = "StatusCode.DEADLINE_EXCEEDED"
MAX_MESSAGE_BYTES = 256 * 1024**2  # a 64-tile frame batch of 256 rows is ~50 MB


class TritonGrpc(TritonTransport):
    """KServe v2 gRPC calls to one server (``target``: ``host:port``)."""

    def __init__(self, target: str, timeout: float, retry_s: float) -> None:
        super().__init__(target, timeout, retry_s)
        try:
            import tritonclient.grpc as grpcclient
            from tritonclient.utils import InferenceServerException
        except ImportError:
            raise AdedgeError(
                "the triton:// (gRPC) backend needs tritonclient[grpc]",
                "pip install 'adedge[triton-client]', or use triton+http://HOST:8000/MODEL",
            ) from None
        self._grpc = grpcclient
        self._error = InferenceServerException
        channel = [
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            # the channel's own reconnects follow our back-off, not gRPC's default (1 s growing
            # to 120 s), so a restarted server is found again within the retry budget
            ("grpc.initial_reconnect_backoff_ms", int(BACKOFF_FIRST_S * 1000)),
            ("grpc.min_reconnect_backoff_ms", int(BACKOFF_FIRST_S * 1000)),
            ("grpc.max_reconnect_backoff_ms", int(BACKOFF_MAX_S * 1000)),
        ]
        self.client = grpcclient.InferenceServerClient(url=target, channel_args=channel)

    def _failure(self, error: Any, what: str) -> TritonUnavailable:
        status = str(error.status() or "")
        if status in UNREACHABLE:
            return unreachable(self.target, f"{status}: {error.message()}")
        if status == TIMED_OUT:
            return too_slow(self.target, what)
        return TritonUnavailable(
            f"Triton at {self.target} refused {what} ({status}: {error.message()})"
        )

    def config(self, model: str) -> dict[str, Any]:
        try:
            answer = self.client.get_model_config(model, as_json=True, client_timeout=self.timeout)
        except self._error as error:
            raise self._failure(error, f"the config of '{model}'") from None
        return answer.get("config", {})

    def infer_once(
        self, model: str, inputs: Mapping[str, np.ndarray], outputs: list[str]
    ) -> dict[str, np.ndarray]:
        tensors = []
        for name, value in inputs.items():
            array = np.ascontiguousarray(value)
            tensor = self._grpc.InferInput(name, list(array.shape), datatype(array.dtype))
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        wanted = [self._grpc.InferRequestedOutput(name) for name in outputs]
        try:
            result = self.client.infer(model, tensors, outputs=wanted, client_timeout=self.timeout)
        except self._error as error:
            raise self._failure(error, f"an inference of '{model}'") from None
        return {name: result.as_numpy(name) for name in outputs}

    def close(self) -> None:
        self.client.close()
