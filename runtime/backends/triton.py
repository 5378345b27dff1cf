"""The ``triton`` backend: a bundle's stages run on a Triton Inference Server.

``--backend triton://HOST:8001/MODEL`` (gRPC) or ``triton+http://HOST:8000/MODEL`` names one
model of a repository written by ``adedge triton-repo`` (``<bundle>_<stage>``). The card
comes from the server: the model's config carries it in ``parameters``
(:func:`adedge.runtime.triton_config.card_from_config`), and the card's other stages are the
models ``<bundle>_<other stage>`` beside it. Resizing, tiling, tile reduction, stage weights,
threshold and heatmaps stay in adedge (:class:`~adedge.runtime.detector.Detector`); each
backend only sends a stage's batch and gets its outputs back, through one of the
transports of :mod:`.triton_transport` (timeouts, reconnect with back-off).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from adedge.bundle import Bundle, Card, StageSpec
from adedge.errors import AdedgeError
from adedge.runtime import frames
from adedge.runtime.backends import create_backend
from adedge.runtime.backends.triton_transport import (
    DEFAULT_RETRY_S,
    DEFAULT_TIMEOUT_S,
    TritonTransport,
    TritonUnavailable,
)
from adedge.runtime.triton_config import card_from_config, check_model_name
from adedge.triton_address import TritonAddress, TritonProtocol, is_triton, parse_triton_address

__all__ = [
    "RemoteModel",
    "TritonBackend",
    "TritonUnavailable",
    "connect",
    "is_triton",
    "open_transport",
]
FALLBACK_RECHECK_S = 1.0  # with a local fallback: how often the server is tried again


def open_transport(address: TritonAddress, timeout: float, retry_s: float) -> TritonTransport:
    """The transport of ``address``'s protocol (gRPC needs tritonclient, HTTP httpx)."""
    if address.protocol is TritonProtocol.GRPC:
        from adedge.runtime.backends.triton_grpc import TritonGrpc

        return TritonGrpc(address.target, timeout, retry_s)
    from adedge.runtime.backends.triton_http import TritonHttp

    return TritonHttp(address.target, timeout, retry_s)


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
    Detector splits larger batches into requests the server accepts.

    With a local ``fallback`` (a backend of the same stage: a bundle with the server's card)
    the stage runs here while the server is unreachable, and the server is tried again every
    FALLBACK_RECHECK_S, so a line does not go blind. A backend built while the server was
    down (``config`` None) reads the model's config on the first try that reaches it, and
    refuses a model whose card is not ``card``."""

    name = "triton"

    def __init__(
        self,
        transport: TritonTransport,
        model: str,
        stage: StageSpec,
        config: Mapping | None,
        card: Card | None = None,
    ) -> None:
        self.transport = transport
        self.fallback: Any = None
        self.fallbacks = 0  # batches run by the fallback
        self._server_again_at = 0.0
        self.model = model
        self.stage = stage
        self.card = card
        self.max_batch: int | None = None
        self.shapes: dict[str, tuple[int, ...]] | None = None
        if config is not None:
            self._configure(config)

    def _configure(self, config: Mapping) -> None:
        """Shapes and ``max_batch`` from the model's config, checked against the card."""
        where = f"Triton model '{self.model}' at {self.transport.target}"
        if self.card is not None:
            card, stage = card_from_config(config, where)
            if stage != self.stage.name or card.to_dict() != self.card.to_dict():
                raise AdedgeError(
                    f"{where} does not carry the card of the local fallback bundle",
                    "give the bundle that was exported to the Triton repository",
                )
        max_batch = int(config.get("max_batch_size", 0)) or None
        inputs = _model_shapes(config, "input")
        outputs = _model_shapes(config, "output")
        spec = self.stage.input
        expected = (spec.channels, spec.height, spec.width)
        if max_batch is None:
            raise AdedgeError(f"{where} has max_batch_size 0", "re-export with adedge triton-repo")
        if inputs.get(self.stage.input_name) != expected:
            raise AdedgeError(
                f"{where}: input '{self.stage.input_name}' is "
                f"{inputs.get(self.stage.input_name)}, the card says {expected}",
                "re-export the repository with `adedge triton-repo`",
            )
        missing = [name for name in self.stage.outputs if name not in outputs]
        if missing:
            raise AdedgeError(f"{where} lacks the output(s) {', '.join(missing)} of the card")
        self.shapes = {name: outputs[name] for name in self.stage.outputs}
        self.max_batch = max_batch

    def _server_down(self) -> None:
        self._server_again_at = time.monotonic() + FALLBACK_RECHECK_S

    def _configured(self) -> bool:
        """Whether the model's config is known, reading it when it is time to try again."""
        if self.shapes is not None:
            return True
        if time.monotonic() < self._server_again_at:
            return False
        try:
            self._configure(self.transport.config(self.model))
        except TritonUnavailable as error:
            if not error.transport:
                raise
            self._server_down()
            return False
        return True

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        if self.fallback is not None and time.monotonic() < self._server_again_at:
            return self._local(batch)
        if not self._configured():  # only without the config: built with a fallback
            return self._local(batch)
        assert self.shapes is not None and self.max_batch is not None
        # the Detector chunks by max_batch, unless the config was read in this very call
        return frames.run_in_chunks(self._remote, batch, self.max_batch, list(self.shapes))

    def _remote(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        assert self.shapes is not None
        try:
            out = self.transport.infer(
                self.model,
                {self.stage.input_name: batch.astype(np.float32, copy=False)},
                list(self.shapes),
                retry=self.fallback is None,
            )
        except TritonUnavailable as error:
            if self.fallback is None or not error.transport:
                raise
            self._server_down()
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
    transport: TritonTransport

    def served_card(self) -> Card | None:
        """The card the server's config carries now (it changes when a new version is rolled
        into the repository); None while the server is unreachable."""
        backend = next(iter(self.backends.values()))
        try:
            config = self.transport.config(backend.model)
        except TritonUnavailable as error:
            if error.transport:
                return None
            raise
        return card_from_config(config, self.path)[0]

    def close(self) -> None:
        """Close the keep-alive connections (a server shutting down waits for them)."""
        self.transport.close()


def connect(
    name: str | TritonAddress,
    fallback: Bundle | None = None,
    threads: int = 0,
    timeout: float = DEFAULT_TIMEOUT_S,
    retry_s: float = DEFAULT_RETRY_S,
) -> RemoteModel:
    """The card of ``triton://host:port/<bundle>_<stage>`` and a backend for each of its
    stages (``<bundle>_<stage>`` for every stage of the card, each checked to carry it).

    ``fallback``: the bundle exported to the server, run on ONNX Runtime here (``threads``)
    while the server is unreachable, from the start if it is down now (its configs are
    then read, and checked against this card, once it answers)."""
    address = name if isinstance(name, TritonAddress) else parse_triton_address(name)
    check_model_name(address.model)
    transport = open_transport(address, timeout, retry_s)
    try:
        try:
            remote = _remote_model(transport, address)
        except TritonUnavailable as error:
            if fallback is None or not error.transport:
                raise
            remote = _offline_model(transport, address, fallback.card)
        if fallback is not None:
            _attach_fallback(remote, fallback, threads)
        return remote
    except BaseException:
        transport.close()
        raise


def _offline_model(transport: TritonTransport, address: TritonAddress, card: Card) -> RemoteModel:
    """The fallback's card, with backends that read their configs once the server answers."""
    named = [spec.name for spec in card.stages if address.model.endswith("_" + spec.name)]
    if len(card.stages) > 1 and not named:
        raise AdedgeError(
            f"{address} names none of the fallback card's stages "
            f"({', '.join(spec.name for spec in card.stages)})",
            "give the model `adedge triton-repo` wrote for this bundle (<bundle>_<stage>)",
        )
    base = address.model.removesuffix("_" + named[0]) if named else address.model
    backends = {}
    for spec in card.stages:
        model = address.model if len(card.stages) == 1 else f"{base}_{spec.name}"
        backends[spec.name] = TritonBackend(transport, model, spec, None, card)
    return RemoteModel(str(address), card, backends, transport)


def _attach_fallback(remote: RemoteModel, fallback: Bundle, threads: int) -> None:
    if fallback.card.to_dict() != remote.card.to_dict():
        raise AdedgeError(
            f"the fallback bundle '{fallback.path}' is not the model {remote.path} serves",
            "give the bundle that was exported to the Triton repository",
        )
    for spec in fallback.card.stages:
        remote.backends[spec.name].fallback = create_backend(
            "onnxruntime", fallback.stage_file(spec), spec, threads=threads
        )


def _remote_model(transport: TritonTransport, address: TritonAddress) -> RemoteModel:
    config = transport.config(address.model)
    card, stage = card_from_config(config, str(address))
    suffix = "_" + stage
    if len(card.stages) > 1 and not address.model.endswith(suffix):
        raise AdedgeError(
            f"{address}: the card has {len(card.stages)} stages, but the model name does not "
            f"end with '_{stage}' to name the others",
            "serve the repository as `adedge triton-repo` wrote it (<bundle>_<stage>)",
        )
    base = address.model.removesuffix(suffix)
    backends = {stage: TritonBackend(transport, address.model, card.stage(stage), config)}
    for spec in card.stages:
        if spec.name in backends:
            continue
        model = f"{base}_{spec.name}"
        other = transport.config(model)
        other_card, other_stage = card_from_config(other, str(address.sibling(model)))
        if other_stage != spec.name or other_card.to_dict() != card.to_dict():
            raise AdedgeError(
                f"Triton model '{model}' does not carry the card of '{address.model}'",
                "export all stages of one bundle together with `adedge triton-repo`",
            )
        backends[spec.name] = TritonBackend(transport, model, spec, other)
    return RemoteModel(str(address), card, backends, transport)
