"""The ``triton`` backend: a bundle's stages run on a Triton Inference Server.

``--backend triton+http://HOST:PORT/MODEL`` names one model of a repository written by
``adedge triton-repo`` (``<bundle>_<stage>``). The card comes from the server: the model's
config carries it in ``parameters`` (:func:`adedge.runtime.triton_config.card_from_config`),
and the card's other stages are the models ``<bundle>_<other stage>`` beside it. Resizing,
tiling, tile reduction, stage weights, threshold and heatmaps stay in adedge
(:class:`~adedge.runtime.detector.Detector`); each backend only sends a stage's batch and
gets its outputs back.

The protocol is KServe v2 over HTTP with Triton's binary tensor extension (the tensors travel
as raw bytes after a JSON header, not as JSON numbers), through httpx: no tritonclient, no
torch on the edge box. gRPC (``triton://``) is not here yet. Each call has a timeout; an
unreachable server is a one-line :class:`TritonUnavailable` (at once when connecting; an
inference first reconnects with back-off for ``retry_s``, so a restarted server loses no
frame).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from adedge.bundle import Card, StageSpec
from adedge.errors import AdedgeError
from adedge.runtime.triton_config import card_from_config, check_model_name

SCHEMES = ("triton+http", "triton+https")
PREFIX = "triton"
DEFAULT_TIMEOUT_S = 10.0
# an inference that loses the server (restart, network blip) reconnects with back-off
# (0.1 s doubling to 2 s) for this long before the frame fails; the first config is not retried
DEFAULT_RETRY_S = 30.0
BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 2.0
FALLBACK_RECHECK_S = 1.0  # with a local fallback: how often the server is tried again
HEADER_LENGTH = "Inference-Header-Content-Length"
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


class TritonUnavailable(AdedgeError):
    """The server cannot be reached (``transport``), or answers with an error."""

    transport = False


def is_triton(name: str) -> bool:
    return name.split(":", 1)[0].split("+", 1)[0] == PREFIX


@dataclass(frozen=True)
class TritonAddress:
    base: str  # http://host:port
    model: str

    def __str__(self) -> str:
        return f"triton+{self.base}/{self.model}"


def parse_address(name: str) -> TritonAddress:
    """``triton+http://host:port/model`` -> (``http://host:port``, ``model``)."""
    parts = urlsplit(name)
    if parts.scheme in ("triton", "triton+grpc"):
        raise AdedgeError(
            f"--backend {name}: Triton over gRPC is not supported yet",
            "use the HTTP endpoint: --backend triton+http://HOST:8000/MODEL",
        )
    model = parts.path.strip("/")
    if parts.scheme not in SCHEMES or not parts.hostname or not model or "/" in model:
        raise AdedgeError(
            f"--backend {name} is not a Triton model address",
            "write --backend triton+http://HOST:PORT/MODEL (a model of `adedge triton-repo`)",
        )
    return TritonAddress(f"{parts.scheme.removeprefix('triton+')}://{parts.netloc}", model)


class TritonHttp:
    """KServe v2 REST calls to one server (httpx, thread-safe: the stream's threads share it)."""

    def __init__(
        self, base: str, timeout: float = DEFAULT_TIMEOUT_S, retry_s: float = DEFAULT_RETRY_S
    ) -> None:
        try:
            import httpx
        except ImportError:
            raise AdedgeError(
                "the triton backend needs httpx", "pip install httpx (or adedge[serve])"
            ) from None
        self.base = base
        self._httpx = httpx
        self.client = httpx.Client(base_url=base, timeout=timeout)
        self.retry_s = retry_s
        self.reconnects = 0  # transport errors survived by a retry

    def _retrying(self, method: str, path: str, **kwargs: Any) -> Any:
        """:meth:`_call`, retried with back-off while the server is unreachable (not on a
        timeout or an error answer: the server is there and said no)."""
        deadline = time.monotonic() + self.retry_s
        pause = BACKOFF_FIRST_S
        while True:
            try:
                return self._call(method, path, **kwargs)
            except TritonUnavailable as error:
                if not error.transport or time.monotonic() + pause > deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, BACKOFF_MAX_S)
            self.reconnects += 1

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.client.request(method, path, **kwargs)
        except self._httpx.TimeoutException:
            raise TritonUnavailable(
                f"Triton at {self.base} did not answer {path} in time",
                "check the server's load and its queue, or raise the timeout",
            ) from None
        except self._httpx.HTTPError as error:
            unreachable = TritonUnavailable(
                f"Triton at {self.base} is unreachable ({type(error).__name__}: {error})",
                "start the server, or check the host and port of --backend",
            )
            unreachable.transport = True
            raise unreachable from None
        if response.status_code != 200:
            try:
                detail = response.json().get("error", response.text)
            except ValueError:
                detail = response.text
            raise TritonUnavailable(
                f"Triton at {self.base} refused {path} ({response.status_code}: {detail})"
            )
        return response

    def config(self, model: str) -> dict[str, Any]:
        return self._call("GET", f"/v2/models/{model}/config").json()

    def infer(
        self, model: str, inputs: Mapping[str, np.ndarray], outputs: list[str], retry: bool = True
    ) -> dict[str, np.ndarray]:
        """One request: every input and output as raw bytes (binary tensor extension);
        ``retry``: reconnect with back-off while the server is unreachable."""
        arrays = [np.ascontiguousarray(value) for value in inputs.values()]
        header = {
            "inputs": [
                {
                    "name": name,
                    "shape": list(array.shape),
                    "datatype": _datatype(array.dtype),
                    "parameters": {"binary_data_size": array.nbytes},
                }
                for name, array in zip(inputs, arrays, strict=True)
            ],
            "outputs": [{"name": name, "parameters": {"binary_data": True}} for name in outputs],
        }
        head = json.dumps(header).encode()
        body = b"".join([head, *(array.tobytes() for array in arrays)])
        response = (self._retrying if retry else self._call)(
            "POST",
            f"/v2/models/{model}/infer",
            content=body,
            headers={HEADER_LENGTH: str(len(head)), "Content-Type": "application/octet-stream"},
        )
        return _decode(response.content, response.headers.get(HEADER_LENGTH))

    def close(self) -> None:
        self.client.close()


def _datatype(dtype: np.dtype) -> str:
    for name, kind in DTYPES.items():
        if np.dtype(kind) == dtype:
            return name
    raise AdedgeError(f"Triton has no datatype for numpy {dtype}")


def _decode(content: bytes, header_length: str | None) -> dict[str, np.ndarray]:
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


def _model_shapes(config: Mapping[str, Any], kind: str) -> dict[str, tuple[int, ...]]:
    """Each tensor's dims as the model sees them, without the batch dim (a ``reshape``
    replaces ``dims``: the served ``score`` is (N, 1), the graph's (N,))."""
    shapes = {}
    for entry in config.get(kind, []):
        dims = entry["reshape"].get("shape", []) if "reshape" in entry else entry.get("dims", [])
        shapes[entry["name"]] = tuple(int(d) for d in dims)
    return shapes


class TritonBackend:
    """One stage served as one Triton model; ``max_batch`` is its ``max_batch_size``, so the
    Detector splits larger batches into requests the server accepts."""

    name = "triton"

    def __init__(self, http: TritonHttp, model: str, stage: StageSpec, config: Mapping) -> None:
        self.http = http
        # a local backend of the same stage (a bundle with the server's card): while the
        # server is unreachable the stage runs here, and the server is tried again every
        # FALLBACK_RECHECK_S, so a line does not go blind
        self.fallback: Any = None
        self.fallbacks = 0  # batches run by the fallback
        self._server_again_at = 0.0
        self.model = model
        self.stage = stage
        self.max_batch = int(config.get("max_batch_size", 0)) or None
        inputs = _model_shapes(config, "input")
        outputs = _model_shapes(config, "output")
        expected = (stage.input.channels, stage.input.height, stage.input.width)
        where = f"Triton model '{model}' at {http.base}"
        if self.max_batch is None:
            raise AdedgeError(f"{where} has max_batch_size 0", "re-export with adedge triton-repo")
        if inputs.get(stage.input_name) != expected:
            raise AdedgeError(
                f"{where}: input '{stage.input_name}' is {inputs.get(stage.input_name)}, "
                f"the card says {expected}",
                "re-export the repository with `adedge triton-repo`",
            )
        missing = [name for name in stage.outputs if name not in outputs]
        if missing:
            raise AdedgeError(f"{where} lacks the output(s) {', '.join(missing)} of the card")
        self.shapes = {name: outputs[name] for name in stage.outputs}

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        if self.fallback is not None and time.monotonic() < self._server_again_at:
            return self._local(batch)
        try:
            out = self.http.infer(
                self.model,
                {self.stage.input_name: batch.astype(np.float32, copy=False)},
                list(self.shapes),
                retry=self.fallback is None,
            )
        except TritonUnavailable as error:
            if self.fallback is None or not error.transport:
                raise
            self._server_again_at = time.monotonic() + FALLBACK_RECHECK_S
            return self._local(batch)
        rows = batch.shape[0]
        return {name: out[name].reshape((rows, *shape)) for name, shape in self.shapes.items()}

    def _local(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        self.fallbacks += 1
        return self.fallback.run(batch)


@dataclass
class RemoteModel:
    """What a Detector needs from the server: the card and one backend per card stage.
    ``path`` stands where a bundle folder's would (reports name the model's address)."""

    path: str
    card: Card
    backends: dict[str, TritonBackend]
    http: TritonHttp

    def close(self) -> None:
        """Close the keep-alive connections (a server shutting down waits for them)."""
        self.http.close()


def connect(
    name: str, timeout: float = DEFAULT_TIMEOUT_S, retry_s: float = DEFAULT_RETRY_S
) -> RemoteModel:
    """The card of ``triton+http://host:port/<bundle>_<stage>`` and a backend for each of its
    stages (``<bundle>_<stage>`` for every stage of the card, each checked to carry it)."""
    address = parse_address(name)
    check_model_name(address.model)
    http = TritonHttp(address.base, timeout, retry_s)
    try:
        return _remote_model(http, address)
    except BaseException:
        http.close()
        raise


def _remote_model(http: TritonHttp, address: TritonAddress) -> RemoteModel:
    config = http.config(address.model)
    card, stage = card_from_config(config, str(address))
    suffix = "_" + stage
    if len(card.stages) > 1 and not address.model.endswith(suffix):
        raise AdedgeError(
            f"{address}: the card has {len(card.stages)} stages, but the model name does not "
            f"end with '_{stage}' to name the others",
            "serve the repository as `adedge triton-repo` wrote it (<bundle>_<stage>)",
        )
    base = address.model.removesuffix(suffix)
    backends = {stage: TritonBackend(http, address.model, card.stage(stage), config)}
    for spec in card.stages:
        if spec.name in backends:
            continue
        model = f"{base}_{spec.name}"
        other = http.config(model)
        other_card, other_stage = card_from_config(other, f"{address.base}/{model}")
        if other_stage != spec.name or other_card.to_dict() != card.to_dict():
            raise AdedgeError(
                f"Triton model '{model}' does not carry the card of '{address.model}'",
                "export all stages of one bundle together with `adedge triton-repo`",
            )
        backends[spec.name] = TritonBackend(http, model, spec, other)
    return RemoteModel(str(address), card, backends, http)
