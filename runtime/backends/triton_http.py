"""KServe v2 REST to Triton (``triton+http://``) through httpx, with Triton's binary tensor
extension: the tensors travel as raw bytes after a JSON header, not as JSON numbers. No
tritonclient and no torch on the edge box for this transport."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from adedge.errors import AdedgeError
from adedge.runtime.backends.triton_transport import (
    DTYPES,
    TritonTransport,
    TritonUnavailable,
    datatype,
    too_slow,
    unreachable,
)

HEADER_LENGTH = "Inference-Header-Content-Length"


class TritonHttp(TritonTransport):
    """KServe v2 REST calls to one server (``target``: ``http(s)://host:port``)."""

    def __init__(self, target: str, timeout: float, retry_s: float) -> None:
        super().__init__(target, timeout, retry_s)
        try:
            import httpx
        except ImportError:
            raise AdedgeError(
                "the triton+http backend needs httpx", "pip install httpx (or adedge[serve])"
            ) from None
        self._httpx = httpx
        self.client = httpx.Client(base_url=target, timeout=timeout)

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.client.request(method, path, **kwargs)
        except self._httpx.TimeoutException:
            raise too_slow(self.target, path) from None
        except self._httpx.HTTPError as error:
            raise unreachable(self.target, f"{type(error).__name__}: {error}") from None
        if response.status_code != 200:
            try:
                detail = response.json().get("error", response.text)
            except ValueError:
                detail = response.text
            raise TritonUnavailable(
                f"Triton at {self.target} refused {path} ({response.status_code}: {detail})"
            )
        return response

    def config(self, model: str) -> dict[str, Any]:
        return self._call("GET", f"/v2/models/{model}/config").json()

    def infer_once(
        self, model: str, inputs: Mapping[str, np.ndarray], outputs: list[str]
    ) -> dict[str, np.ndarray]:
        arrays = [np.ascontiguousarray(value) for value in inputs.values()]
        header = {
            "inputs": [
                {
                    "name": name,
                    "shape": list(array.shape),
                    "datatype": datatype(array.dtype),
                    "parameters": {"binary_data_size": array.nbytes},
                }
                for name, array in zip(inputs, arrays, strict=True)
            ],
            "outputs": [{"name": name, "parameters": {"binary_data": True}} for name in outputs],
        }
        head = json.dumps(header).encode()
        body = b"".join([head, *(array.tobytes() for array in arrays)])
        response = self._call(
            "POST",
            f"/v2/models/{model}/infer",
            content=body,
            headers={HEADER_LENGTH: str(len(head)), "Content-Type": "application/octet-stream"},
        )
        return decode(response.content, response.headers.get(HEADER_LENGTH))

    def close(self) -> None:
        self.client.close()


def decode(content: bytes, header_length: str | None) -> dict[str, np.ndarray]:
    """The outputs of a response whose binary tensors follow its JSON header, in order."""
    length = int(header_length) if header_length is not None else len(content)
    header = json.loads(content[:length])
    offset = length
    out = {}
    for entry in header.get("outputs", []):
        dtype = np.dtype(DTYPES[entry["datatype"]])
        size = (entry.get("parameters") or {}).get("binary_data_size")
        if size is None:  # a JSON tensor (a server without the extension for this output)
            out[entry["name"]] = np.asarray(entry["data"], dtype).reshape(entry["shape"])
            continue
        data = np.frombuffer(content, dtype, count=int(size) // dtype.itemsize, offset=offset)
        out[entry["name"]] = data.reshape(entry["shape"])
        offset += int(size)
    return out
