"""A Triton server's model as ``--backend`` names it: ``triton://HOST:8001/MODEL`` (gRPC) or
``triton+http(s)://HOST:8000/MODEL`` (KServe v2 REST). Parsed here, torch-free, for the
backend table (:mod:`adedge.formats`) and the backend itself
(:mod:`adedge.runtime.backends.triton`)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from adedge.choice import Choice
from adedge.errors import AdedgeError

PREFIX = "triton"


class TritonProtocol(Choice):
    """How a client speaks to Triton: gRPC (``triton://``, ``triton+grpc://``) or KServe v2
    REST (``triton+http://``, ``triton+https://``)."""

    GRPC = "grpc"
    HTTP = "http"
    HTTPS = "https"


TRITON_SCHEMES = {
    "triton": TritonProtocol.GRPC,
    "triton+grpc": TritonProtocol.GRPC,
    "triton+http": TritonProtocol.HTTP,
    "triton+https": TritonProtocol.HTTPS,
}
TRITON_PORTS = {TritonProtocol.GRPC: 8001, TritonProtocol.HTTP: 8000, TritonProtocol.HTTPS: 8000}
TRITON_FORM = "triton://HOST:8001/MODEL (gRPC) or triton+http://HOST:8000/MODEL"


@dataclass(frozen=True)
class TritonAddress:
    """One model of a Triton server: ``triton://host:8001/<bundle>_<stage>`` (the port may
    be left out: 8001 for gRPC, 8000 for HTTP)."""

    protocol: TritonProtocol
    host: str
    port: int
    model: str

    @property
    def target(self) -> str:
        """What the transport connects to: ``host:port`` (gRPC) or ``http://host:port``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        where = f"{host}:{self.port}"
        return where if self.protocol is TritonProtocol.GRPC else f"{self.protocol}://{where}"

    def __str__(self) -> str:
        scheme = "triton" if self.protocol is TritonProtocol.GRPC else f"triton+{self.protocol}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}/{self.model}"

    def sibling(self, model: str) -> TritonAddress:
        """Another model of the same server."""
        return TritonAddress(self.protocol, self.host, self.port, model)


def is_triton(spec: str) -> bool:
    """Whether ``--backend`` names a Triton model rather than a local backend."""
    return spec.strip().split(":", 1)[0].split("+", 1)[0].lower() == PREFIX


def parse_triton_address(spec: str) -> TritonAddress:
    """``triton[+grpc|+http|+https]://HOST[:PORT]/MODEL`` -> TritonAddress; one line
    naming the problem otherwise (the model name keeps its case)."""
    text = spec.strip()
    bad = AdedgeError(
        f"--backend {text} is not a Triton model address",
        f"write --backend {TRITON_FORM} (a model of `adedge triton-repo`)",
    )
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise bad from None
    protocol = TRITON_SCHEMES.get(parts.scheme.lower())
    model = parts.path.strip("/")
    if protocol is None or not parts.hostname or not model or "/" in model:
        raise bad
    if parts.query or parts.fragment or parts.username or parts.password:
        raise AdedgeError(
            f"--backend {text}: a Triton address takes no user, query or fragment",
            f"write --backend {TRITON_FORM}",
        )
    return TritonAddress(protocol, parts.hostname, port or TRITON_PORTS[protocol], model)
