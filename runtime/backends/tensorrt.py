"""TensorRT backend: runs a stage's engine on an NVIDIA GPU (desktop or Jetson).

TensorRT 10/11 API only: named I/O tensors, ``set_input_shape``, ``set_tensor_address``,
``execute_async_v3``. Device and pinned host buffers are allocated once for the engine's
max batch (the card's; a tiled stage's tiles per frame) and reused; ``max_batch`` tells the
Detector to split larger batches. GPU memory comes from pycuda with the device's *primary*
context, pushed around every call, so the stream's worker thread (not the thread that
built the backend) can run it; where pycuda is missing and torch has CUDA, torch CUDA
tensors are the buffers (torch uses the same primary context).

A missing or stale engine (another GPU, TensorRT, graph or batch) is built on first use,
with a message about the wait (``adedge.runtime.backends.engines``).
No TensorRT, no CUDA binding or no GPU: one :class:`TensorRTUnavailable` error that
suggests ``--backend onnxruntime``.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from adedge.bundle import StageSpec
from adedge.errors import BundleError
from adedge.runtime.frames import run_in_chunks


def _stderr(message: str) -> None:
    print(f"adedge: {message}", file=sys.stderr, flush=True)


class PycudaDevice:
    """GPU memory and a stream through pycuda, in the device's primary context."""

    kind = "pycuda"

    def __init__(self, index: int = 0) -> None:
        import pycuda.driver as cuda

        self.cuda = cuda
        cuda.init()
        self.device = cuda.Device(index)
        self.capability = tuple(int(v) for v in self.device.compute_capability())
        self.context = self.device.retain_primary_context()
        with self.active():
            self.stream = cuda.Stream()
        self.handle = self.stream.handle

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Make the primary context current on this thread for the block."""
        self.context.push()
        try:
            yield
        finally:
            self.cuda.Context.pop()

    def device_buffer(self, nbytes: int) -> tuple[Any, int]:
        allocation = self.cuda.mem_alloc(max(int(nbytes), 1))
        return allocation, int(allocation)

    def host_buffer(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        return self.cuda.pagelocked_empty(shape, dtype)

    def to_device(self, pointer: int, host: np.ndarray) -> None:
        self.cuda.memcpy_htod_async(pointer, host, self.stream)

    def to_host(self, host: np.ndarray, pointer: int) -> None:
        self.cuda.memcpy_dtoh_async(host, pointer, self.stream)

    def synchronize(self) -> None:
        self.stream.synchronize()


class TorchDevice:
    """The same through torch CUDA tensors (when pycuda is not installed)."""

    kind = "torch"

    def __init__(self, index: int = 0) -> None:
        import torch

        if not torch.cuda.is_available() or torch.cuda.device_count() <= index:
            raise RuntimeError("torch sees no CUDA GPU")
        self.torch = torch
        self.device = torch.device("cuda", index)
        self.capability = tuple(int(v) for v in torch.cuda.get_device_capability(index))
        self.stream = torch.cuda.Stream(self.device)
        self.handle = self.stream.cuda_stream
        self._views: dict[int, Any] = {}

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        with self.torch.cuda.device(self.device), self.torch.cuda.stream(self.stream):
            yield

    def device_buffer(self, nbytes: int) -> tuple[Any, int]:
        tensor = self.torch.empty(max(int(nbytes), 1), dtype=self.torch.uint8, device=self.device)
        self._views[tensor.data_ptr()] = tensor
        return tensor, tensor.data_ptr()

    def host_buffer(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        pinned = self.torch.empty(max(nbytes, 1), dtype=self.torch.uint8).pin_memory()
        self._views[pinned.data_ptr()] = pinned
        return pinned.numpy()[:nbytes].view(dtype).reshape(shape)

    def to_device(self, pointer: int, host: np.ndarray) -> None:
        source = self.torch.from_numpy(host.reshape(-1).view(np.uint8))
        self._views[pointer][: source.numel()].copy_(source, non_blocking=True)

    def to_host(self, host: np.ndarray, pointer: int) -> None:
        target = self.torch.from_numpy(host.reshape(-1).view(np.uint8))
        target.copy_(self._views[pointer][: target.numel()], non_blocking=True)

    def synchronize(self) -> None:
        self.stream.synchronize()


def open_device(index: int = 0, buffers: str = "auto") -> PycudaDevice | TorchDevice:
    """pycuda (preferred), else torch CUDA tensors; a TensorRTUnavailable if neither works."""
    from adedge.runtime.backends.engines import unavailable

    reasons = []
    if buffers in ("auto", "pycuda"):
        try:
            return PycudaDevice(index)
        except ImportError:
            reasons.append("pycuda is not installed")
        except Exception as exc:  # pycuda.driver.Error: no driver or no device
            reasons.append(f"CUDA does not start through pycuda ({exc})")
    if buffers in ("auto", "torch"):
        try:
            return TorchDevice(index)
        except ImportError:
            reasons.append("torch is not installed")
        except Exception as exc:
            reasons.append(f"no GPU through torch ({exc})")
    raise unavailable("; ".join(reasons) or f"unknown buffer kind '{buffers}'")


class TensorRTBackend:
    """One stage's engine with buffers for its max batch; ``run`` is thread-safe."""

    name = "tensorrt"

    def __init__(
        self,
        bundle: Path,
        stage: StageSpec,
        precision: str | None = None,
        max_batch: int | None = None,
        device: int = 0,
        buffers: str = "auto",
        log: Callable[[str], None] | None = None,
    ) -> None:
        from adedge.runtime.backends.engines import ensure_engine, import_tensorrt

        self.trt = trt = import_tensorrt()
        self.gpu = open_device(device, buffers)
        self.stage = stage
        built = ensure_engine(
            Path(bundle),
            stage,
            precision=precision,
            max_batch=max_batch,
            device=device,
            log=log or _stderr,
            trt=trt,
            capability=self.gpu.capability,
        )
        self.engine_path = built.engine
        self.precision = built.key.precision
        self.max_batch = built.key.max_batch
        self._lock = threading.Lock()
        with self.gpu.active():
            self._load(built.engine)
            self._allocate()

    def _load(self, path: Path) -> None:
        trt = self.trt
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise BundleError(
                f"TensorRT cannot load the engine {path}",
                "delete it and run again: it is rebuilt for this GPU and TensorRT",
            )
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        mode = trt.TensorIOMode.INPUT
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == mode]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) != mode]
        if self.inputs != [self.stage.input_name]:
            raise BundleError(
                f"engine {path.name} has inputs {self.inputs}, the card says "
                f"'{self.stage.input_name}'",
                "delete the engine: it is rebuilt from the bundle's graph",
            )
        missing = [n for n in self.stage.outputs if n not in self.outputs]
        if missing:
            raise BundleError(
                f"engine {path.name} lacks the output(s) {', '.join(missing)} named in the card",
                "delete the engine: it is rebuilt from the bundle's graph",
            )

    def _allocate(self) -> None:
        """Pinned host and device buffers for the max batch, bound once by address."""
        spec = self.stage.input
        self.input_shape = (spec.channels, spec.height, spec.width)
        self.context.set_input_shape(self.inputs[0], (self.max_batch, *self.input_shape))
        self.host: dict[str, np.ndarray] = {}
        self.device_memory: dict[str, tuple[Any, int]] = {}
        for name in [*self.inputs, *self.outputs]:
            shape = tuple(int(d) for d in self.context.get_tensor_shape(name))
            dtype = np.dtype(self.trt.nptype(self.engine.get_tensor_dtype(name)))
            self.host[name] = self.gpu.host_buffer(shape, dtype)
            self.device_memory[name] = self.gpu.device_buffer(self.host[name].nbytes)
            self.context.set_tensor_address(name, self.device_memory[name][1])

    def close(self) -> None:
        """Free the device buffers and the engine inside the primary context (pycuda frees
        an allocation in the context it came from; at interpreter exit there may be none)."""
        memory = getattr(self, "device_memory", None)
        if not memory:
            return
        with self._lock, self.gpu.active():
            for allocation, _ in memory.values():
                free = getattr(allocation, "free", None)
                if free is not None:
                    free()
            self.device_memory = {}
            self.context = self.engine = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # never raise from a finaliser
            self.close()

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """float32 (N, C, H, W) -> the stage's outputs, in chunks of ``max_batch``."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if batch.shape[1:] != self.input_shape:
            raise BundleError(
                f"stage '{self.stage.name}' expects (N, {', '.join(map(str, self.input_shape))}) "
                f"inputs, got {batch.shape}",
                "this is a bug in the caller's preprocessing",
            )
        return run_in_chunks(self._run, batch, self.max_batch, self.stage.outputs)

    def _run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        count = len(batch)
        name = self.inputs[0]
        with self._lock, self.gpu.active():
            self.context.set_input_shape(name, (count, *self.input_shape))
            host_in = self.host[name][:count]
            host_in[...] = batch
            self.gpu.to_device(self.device_memory[name][1], host_in)
            if not self.context.execute_async_v3(self.gpu.handle):
                raise RuntimeError(f"TensorRT failed to run stage '{self.stage.name}'")
            shapes = {}
            for out in self.stage.outputs:
                shapes[out] = tuple(int(d) for d in self.context.get_tensor_shape(out))
                self.gpu.to_host(self.host[out][: shapes[out][0]], self.device_memory[out][1])
            self.gpu.synchronize()
            return {out: self.host[out][: shapes[out][0]].copy() for out in self.stage.outputs}
