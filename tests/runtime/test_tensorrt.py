"""TensorRT build and backend: engines are built on the device itself, from the bundle's
ONNX graphs, because an engine only runs on the GPU and TensorRT version that built it.

Without a GPU: the decisions (strongly typed vs FP16 flag by TensorRT version, profile
shapes from the card, cache keys and engine names, staleness), the error when TensorRT,
pycuda or a GPU is missing, and the whole build/run data flow against stand-in ``tensorrt``
and ``pycuda.driver`` modules whose "engine" runs the ONNX graph it was built from with
ONNX Runtime (so buffers, shapes, chunking and the primary-context handling are checked
with real numbers). Tests marked ``gpu`` build and run real engines where a GPU and
TensorRT exist, and skip only there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import types
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from cli_helpers import assert_one_line_error, run_cli

from adedge.bundle import EngineSpec, GraphFile, StageSpec, TilingSpec, load_bundle
from adedge.errors import AdedgeError
from adedge.export.parity import spearman
from adedge.preprocess import InputSpec
from adedge.runtime.backends import engine_plan
from adedge.runtime.backends import engines as tb
from adedge.runtime.detector import Detector

SPEC = InputSpec(32, 32, "gray", (0.5,), (0.5,))


def stage(tiling: TilingSpec | None = None, engine: EngineSpec | None = None) -> StageSpec:
    graphs = {"fp32": GraphFile("global.onnx", "0" * 64)}
    return StageSpec("global", graphs, "image", SPEC, tiling=tiling, engine=engine)


# --- decisions without a GPU -----------------------------------------------------------------


@pytest.mark.parametrize(
    "version, precision, weak, graph, strongly, flag",
    [
        ((8, 5, 2, 2), "fp16", False, "fp32", False, True),  # JetPack 5: FP16 flag
        ((9, 3, 0), "fp16", False, "fp32", False, True),
        ((10, 3, 0, 30), "fp16", False, "fp16", True, False),  # JetPack 6: strongly typed
        ((10, 3, 0, 30), "fp16", True, "fp32", False, True),  # asked for the flag
        ((11, 0, 0), "fp16", False, "fp16", True, False),  # no flag any more
        ((10, 3, 0), "fp32", False, "fp32", True, False),
        ((8, 6, 1), "fp32", False, "fp32", False, False),
    ],
)
def test_choose_build_by_version(version, precision, weak, graph, strongly, flag):
    plan = engine_plan.choose_build(version, precision, weak=weak)
    assert (plan.graph, plan.strongly_typed, plan.fp16_flag) == (graph, strongly, flag)


def test_choose_build_without_fp16_graph_and_on_trt11():
    plan = engine_plan.choose_build((10, 3), "fp16", has_fp16_graph=False)  # an older bundle
    assert (plan.graph, plan.fp16_flag) == ("fp32", True)
    with pytest.raises(AdedgeError, match="no weakly typed FP16 mode") as caught:
        engine_plan.choose_build((11, 0), "fp16", has_fp16_graph=False)
    assert "re-export the bundle" in caught.value.hint
    with pytest.raises(AdedgeError, match="no weakly typed FP16 mode"):
        engine_plan.choose_build((11, 1), "fp16", weak=True)
    with pytest.raises(AdedgeError, match="precision 'int8' is not supported"):
        engine_plan.choose_build((10, 3), "int8")


def test_parse_version():
    assert engine_plan.parse_version("10.3.0.30") == (10, 3, 0, 30)
    assert engine_plan.parse_version("11.0.0b1") == (11, 0, 0)
    assert engine_plan.parse_version("8.5.2.2") == (8, 5, 2, 2)


def test_profile_whole_frame_stage_uses_card_or_option():
    spec = engine_plan.engine_spec(stage(), "fp16")
    shapes = engine_plan.profile_shapes(stage(), spec)
    assert (shapes.minimum, shapes.optimum, shapes.maximum) == (
        (1, 1, 32, 32),
        (1, 1, 32, 32),
        (8, 1, 32, 32),
    )
    spec = engine_plan.engine_spec(stage(), "fp16", max_batch=16, workspace_mib=512)
    assert (spec.max_batch, spec.opt_batch, spec.workspace_mib) == (16, 1, 512)
    carded = stage(engine=EngineSpec("fp32", max_batch=4, opt_batch=2, workspace_mib=256))
    assert engine_plan.engine_spec(carded) == EngineSpec("fp32", 4, 2, 256)


def test_profile_tiled_stage_is_tiles_per_frame():
    # 128x128 frame, 32px tiles every 16px: 7 x 7 = 49 tiles, always one frame per batch
    tiled = stage(tiling=TilingSpec((128, 128), 32, 16, "reflect"))
    assert engine_plan.tiles_per_frame(tiled) == 49
    spec = engine_plan.engine_spec(tiled, "fp16", max_batch=8)
    shapes = engine_plan.profile_shapes(tiled, spec)
    assert (shapes.minimum[0], shapes.optimum[0], shapes.maximum[0]) == (1, 49, 49)
    # a remainder grows the grid (reflect padding): 100 -> 6 tiles per axis
    assert engine_plan.tiles_per_frame(stage(tiling=TilingSpec((100, 100), 32, 16))) == 36


def test_engine_key_names_the_file_and_decides_staleness(tmp_path):
    key = engine_plan.EngineKey("ab" * 32, (8, 7), "10.3.0.30", "fp16", 8)
    assert key.file_name("global") == "global.sm87.trt10.3.0.30.fp16.b8.engine"
    assert engine_plan.timing_cache_name((8, 7), "10.3.0.30") == "timing.sm87.trt10.3.0.30.cache"
    engine = tmp_path / key.file_name("global")
    assert not engine_plan.is_fresh(engine, key)  # missing
    engine.write_bytes(b"engine")
    assert not engine_plan.is_fresh(engine, key)  # no sidecar
    sidecar = engine.with_name(engine.name + ".json")
    sidecar.write_text(json.dumps({"key": key.to_dict()}))
    assert engine_plan.is_fresh(engine, key)
    other_graph = engine_plan.EngineKey("cd" * 32, (8, 7), "10.3.0.30", "fp16", 8)
    assert not engine_plan.is_fresh(engine, other_graph)  # re-exported graph: same name, stale


def test_engine_dir_falls_back_when_the_bundle_is_read_only(tmp_path, monkeypatch):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    assert engine_plan.engine_dir(bundle) == bundle / "engines"
    monkeypatch.setenv(engine_plan.ENGINE_FALLBACK_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # as for /opt/models
    fallback = engine_plan.engine_dir(bundle)
    assert fallback == tmp_path / "cache" / "bundle" and fallback.is_dir()


# --- errors where TensorRT, pycuda or a GPU is missing ---------------------------------------


def block_modules(monkeypatch, *names: str) -> None:
    for name in names:
        monkeypatch.setitem(sys.modules, name, None)  # `import name` raises ImportError


def test_no_tensorrt_is_one_clear_error(monkeypatch, ygan_bundle):
    block_modules(monkeypatch, "tensorrt")
    with pytest.raises(tb.TensorRTUnavailable) as caught:
        Detector(ygan_bundle, backend="tensorrt")
    text = caught.value.one_line()
    assert "`tensorrt` Python package is not installed" in text
    assert "--backend onnxruntime" in text


def test_no_pycuda_and_no_torch_gpu_is_one_clear_error(monkeypatch, ygan_bundle):
    monkeypatch.setitem(sys.modules, "tensorrt", FakeTensorRT("10.3.0.30"))
    block_modules(monkeypatch, "pycuda", "pycuda.driver")
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(tb.TensorRTUnavailable) as caught:
        Detector(ygan_bundle, backend="tensorrt")
    text = caught.value.one_line()
    assert "pycuda is not installed" in text and "--backend onnxruntime" in text


def test_stream_with_tensorrt_missing_prints_one_line(monkeypatch, capsys, ygan_bundle):
    block_modules(monkeypatch, "tensorrt")
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        "stream",
        "--model",
        ygan_bundle,
        "--backend",
        "tensorrt",
        "--max-frames",
        1,
    )
    assert_one_line_error(
        code, err, "TensorRT engines cannot be used here", "--backend onnxruntime"
    )


def test_export_engine_without_tensorrt_names_the_alternative(
    monkeypatch, capsys, trained_run, tmp_path
):
    block_modules(monkeypatch, "tensorrt")
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        "export",
        "--method",
        "ygan",
        "--checkpoint",
        trained_run,
        "--out",
        tmp_path / "m",
        "--format",
        "onnx,engine",
        "--half",
    )
    assert_one_line_error(code, err, "engine not supported", "tensorrt", "--format onnx")
    assert not (tmp_path / "m").exists()


def test_engine_builder_imports_without_torch_or_onnx():
    """A Jetson streams (and builds engines) with neither torch nor onnx installed."""
    script = textwrap.dedent(
        """
        import sys

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "onnx"):
                    raise ImportError(name + " is blocked")

        sys.meta_path.insert(0, Block())
        from adedge.runtime.backends import engines, tensorrt
        assert engines.choose_build((10, 3)).strongly_typed
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


# --- stand-in tensorrt and pycuda: the build and run data flow -------------------------------


class FakeMemory:
    """Device memory: integer addresses -> byte arrays."""

    def __init__(self) -> None:
        self.blocks: dict[int, np.ndarray] = {}
        self.next = 0x1000

    def alloc(self, nbytes: int) -> int:
        address, self.next = self.next, self.next + nbytes + 256
        self.blocks[address] = np.zeros(nbytes, np.uint8)
        return address


class FakeCuda(types.ModuleType):
    """``pycuda.driver`` as the backend uses it; records primary-context pushes per thread."""

    def __init__(self) -> None:
        super().__init__("pycuda.driver")
        self.memory = FakeMemory()
        self.events: list[tuple[str, int]] = []
        cuda = self

        class Allocation:
            def __init__(self, address: int) -> None:
                self.address = address

            def __int__(self) -> int:
                return self.address

            def free(self) -> None:
                del cuda.memory.blocks[self.address]

        class Context:
            @staticmethod
            def pop() -> None:
                cuda.events.append(("pop", threading.get_ident()))

        class PrimaryContext:
            def push(self) -> None:
                cuda.events.append(("push", threading.get_ident()))

        class Device:
            def __init__(self, index: int) -> None:
                self.index = index

            @staticmethod
            def count() -> int:
                return 1

            def compute_capability(self) -> tuple[int, int]:
                return (8, 7)

            def retain_primary_context(self) -> PrimaryContext:
                return PrimaryContext()

        class Stream:
            handle = 42

            def synchronize(self) -> None:
                cuda.events.append(("sync", threading.get_ident()))

        self.Allocation, self.Context, self.Device, self.Stream = (
            Allocation,
            Context,
            Device,
            Stream,
        )

    def init(self) -> None:
        pass

    def mem_alloc(self, nbytes: int):
        return self.Allocation(self.memory.alloc(int(nbytes)))

    def pagelocked_empty(self, shape, dtype) -> np.ndarray:
        return np.empty(shape, dtype)

    def memcpy_htod_async(self, address, host: np.ndarray, stream) -> None:
        raw = np.ascontiguousarray(host).reshape(-1).view(np.uint8)
        self.memory.blocks[int(address)][: raw.size] = raw

    def memcpy_dtoh_async(self, host: np.ndarray, address, stream) -> None:
        raw = host.reshape(-1).view(np.uint8)
        raw[:] = self.memory.blocks[int(address)][: raw.size]


class FakeTensorRT(types.ModuleType):
    """The slice of the TensorRT 8.5-11 Python API the builder and backend use. The
    "engine" is JSON naming the ONNX file and the build settings; running it runs that
    file with ONNX Runtime on the addresses bound with ``set_tensor_address``."""

    def __init__(self, version: str, fail_node: str | None = None) -> None:
        super().__init__("tensorrt")
        self.__version__ = version
        self.fail_node = fail_node
        self.builds: list[dict] = []
        self.cuda: FakeCuda | None = None
        trt = self
        major = int(version.split(".")[0])
        creation = {"STRONGLY_TYPED": 1} if major >= 10 else {"EXPLICIT_BATCH": 0}
        if major == 10:
            creation["EXPLICIT_BATCH"] = 0
        self.NetworkDefinitionCreationFlag = types.SimpleNamespace(**creation)
        flags = {"PREFER_PRECISION_CONSTRAINTS": 9}
        if major < 11:
            flags["FP16"] = 0
        self.BuilderFlag = types.SimpleNamespace(**flags)
        self.MemoryPoolType = types.SimpleNamespace(WORKSPACE=0)
        self.TensorIOMode = types.SimpleNamespace(INPUT=0, OUTPUT=1)
        self.float32 = "float32"

        class Logger:
            WARNING = 2

            def __init__(self, level: int) -> None:
                self.level = level

        class Layer:
            def __init__(self, name: str) -> None:
                self.name, self.precision, self.num_outputs = name, None, 1
                self.output_types: dict[int, str] = {}

            def set_output_type(self, index: int, kind: str) -> None:
                self.output_types[index] = kind

        class Network:
            def __init__(self, flags: int) -> None:
                self.flags, self.layers, self.onnx = flags, [], None

            @property
            def num_layers(self) -> int:
                return len(self.layers)

            def get_layer(self, index: int) -> Layer:
                return self.layers[index]

        class ParserError:
            def __init__(self, node: str, op: str) -> None:
                self._node, self._op = node, op

            def node_name(self) -> str:
                return self._node

            def node_operator(self) -> str:
                return self._op

            def desc(self) -> str:
                return f"no importer for {self._op}"

        class OnnxParser:
            def __init__(self, network: Network, logger: Logger) -> None:
                self.network, self.errors = network, []

            @property
            def num_errors(self) -> int:
                return len(self.errors)

            def get_error(self, index: int) -> ParserError:
                return self.errors[index]

            def parse_from_file(self, path: str) -> bool:
                model = onnx.load(path)
                for node in model.graph.node:
                    if node.name == trt.fail_node:
                        self.errors.append(ParserError(node.name, node.op_type))
                        return False
                    self.network.layers.append(Layer(node.name))
                self.network.onnx = path
                return True

        class Cache:
            def serialize(self) -> bytes:
                return b"timing-cache"

        class Profile:
            def set_shape(self, name, minimum, optimum, maximum) -> None:
                self.shape = (name, tuple(minimum), tuple(optimum), tuple(maximum))

        class Config:
            def __init__(self) -> None:
                self.flags, self.pool, self.profiles, self.cache_in = set(), None, [], None

            def set_memory_pool_limit(self, kind, size) -> None:
                self.pool = size

            def set_flag(self, flag) -> None:
                self.flags.add(flag)

            def add_optimization_profile(self, profile) -> None:
                self.profiles.append(profile)

            def create_timing_cache(self, data: bytes) -> Cache:
                self.cache_in = data
                return Cache()

            def set_timing_cache(self, cache, ignore_mismatch) -> None:
                pass

            def get_timing_cache(self) -> Cache:
                return Cache()

        class Builder:
            def __init__(self, logger: Logger) -> None:
                pass

            def create_network(self, flags: int) -> Network:
                return Network(flags)

            def create_builder_config(self) -> Config:
                return Config()

            def create_optimization_profile(self) -> Profile:
                return Profile()

            def build_serialized_network(self, network: Network, config: Config) -> bytes:
                record = {
                    "onnx": network.onnx,
                    "flags": network.flags,
                    "builder_flags": sorted(config.flags),
                    "workspace": config.pool,
                    "profile": config.profiles[0].shape,
                    "timing_cache_in": config.cache_in.decode(),
                    "pinned": sorted(
                        layer.name for layer in network.layers if layer.precision == "float32"
                    ),
                }
                trt.builds.append(record)
                return json.dumps(record).encode()

        class Context:
            def __init__(self, engine) -> None:
                self.engine, self.addresses, self.shapes = engine, {}, {}

            def set_input_shape(self, name: str, shape) -> None:
                limit = self.engine.record["profile"][3][0]
                assert 1 <= shape[0] <= limit, (shape, limit)
                self.shapes[name] = tuple(shape)

            def get_tensor_shape(self, name: str) -> tuple[int, ...]:
                batch = self.shapes[self.engine.input][0]
                dims = self.engine.dims[name]
                return (batch, *dims)

            def set_tensor_address(self, name: str, address: int) -> None:
                self.addresses[name] = int(address)

            def execute_async_v3(self, stream: int) -> bool:
                memory = trt.cuda.memory.blocks
                name = self.engine.input
                shape = self.shapes[name]
                count = int(np.prod(shape))
                data = memory[self.addresses[name]][: count * 4].view(np.float32)
                outputs = self.engine.session.run(None, {name: data.reshape(shape)})
                for out, value in zip(self.engine.outputs, outputs, strict=True):
                    raw = np.ascontiguousarray(value, np.float32).reshape(-1).view(np.uint8)
                    memory[self.addresses[out]][: raw.size] = raw
                return stream == 42

        class Engine:
            def __init__(self, record: dict) -> None:
                self.record = record
                self.session = ort.InferenceSession(
                    record["onnx"], providers=["CPUExecutionProvider"]
                )
                self.input = self.session.get_inputs()[0].name
                self.outputs = [o.name for o in self.session.get_outputs()]
                self.dims = {
                    v.name: tuple(v.shape[1:])
                    for v in [*self.session.get_inputs(), *self.session.get_outputs()]
                }
                self.names = [self.input, *self.outputs]

            @property
            def num_io_tensors(self) -> int:
                return len(self.names)

            def get_tensor_name(self, index: int) -> str:
                return self.names[index]

            def get_tensor_mode(self, name: str) -> int:
                return 0 if name == self.input else 1

            def get_tensor_dtype(self, name: str) -> str:
                return "float32"

            def create_execution_context(self) -> Context:
                return Context(self)

        class Runtime:
            def __init__(self, logger: Logger) -> None:
                pass

            def deserialize_cuda_engine(self, data: bytes):
                try:
                    return Engine(json.loads(data))
                except ValueError:
                    return None

        self.Logger, self.Builder, self.OnnxParser, self.Runtime = (
            Logger,
            Builder,
            OnnxParser,
            Runtime,
        )

    @staticmethod
    def nptype(kind: str):
        return np.float32


@pytest.fixture
def fake_gpu(monkeypatch):
    """Install stand-in ``tensorrt`` (10.3) and ``pycuda.driver`` modules."""
    cuda = FakeCuda()
    trt = FakeTensorRT("10.3.0.30")
    trt.cuda = cuda
    package = types.ModuleType("pycuda")
    package.driver = cuda
    monkeypatch.setitem(sys.modules, "pycuda", package)
    monkeypatch.setitem(sys.modules, "pycuda.driver", cuda)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    return trt, cuda


@pytest.fixture
def bundle_copy(ygan_bundle, tmp_path) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(ygan_bundle, copy)
    return copy


def test_build_strongly_typed_from_fp16_graph_and_cache(fake_gpu, bundle_copy):
    trt, _ = fake_gpu
    spec = load_bundle(bundle_copy).card.stages[0]
    messages: list[str] = []
    first = tb.ensure_engine(bundle_copy, spec, precision="fp16", log=messages.append)
    assert first.built and first.engine.parent == bundle_copy / "engines"
    assert first.engine.name == "global.sm87.trt10.3.0.30.fp16.b8.engine"
    assert "building the TensorRT engine for stage 'global'" in messages[0]
    assert "several minutes" in messages[0] and str(first.engine) in messages[0]
    build = trt.builds[-1]
    assert Path(build["onnx"]).name == "global.fp16.onnx"  # precision from the graph
    assert build["flags"] == 1 << 1 and build["builder_flags"] == []  # STRONGLY_TYPED only
    assert build["profile"] == ("image", (1, 1, 32, 32), (1, 1, 32, 32), (8, 1, 32, 32))
    assert build["workspace"] == 1024 << 20
    cache = bundle_copy / "engines" / "timing.sm87.trt10.3.0.30.cache"
    assert cache.read_bytes() == b"timing-cache" and build["timing_cache_in"] == ""
    sidecar = json.loads(first.engine.with_name(first.engine.name + ".json").read_text())
    assert sidecar["key"]["onnx_sha256"] == spec.graph("fp16").sha256
    # a second use reuses it; a re-exported graph (other sha256) rebuilds with the cache
    again = tb.ensure_engine(bundle_copy, spec, precision="fp16", log=messages.append)
    assert not again.built and len(trt.builds) == 1
    stale = engine_plan.EngineKey("0" * 64, (8, 7), "10.3.0.30", "fp16", 8)
    first.engine.with_name(first.engine.name + ".json").write_text(
        json.dumps({"key": stale.to_dict()})
    )
    rebuilt = tb.ensure_engine(bundle_copy, spec, precision="fp16", log=messages.append)
    assert rebuilt.built and "stale" in messages[-2] and trt.builds[-1]["timing_cache_in"]


def test_build_weakly_typed_on_old_tensorrt_pins_the_islands(monkeypatch, fake_gpu, bundle_copy):
    trt = FakeTensorRT("8.6.1")
    trt.cuda = fake_gpu[1]
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    spec = load_bundle(bundle_copy).card.stages[0]
    result = tb.ensure_engine(bundle_copy, spec, precision="fp16", max_batch=4)
    build = trt.builds[-1]
    assert Path(build["onnx"]).name == "global.onnx"  # FP32 graph + FP16 flag
    assert build["builder_flags"] == [0, 9]  # FP16, PREFER_PRECISION_CONSTRAINTS
    assert build["flags"] == 1 << 0  # EXPLICIT_BATCH on TensorRT 8
    assert build["pinned"] == ["/ReduceMax", "/Softmax", "/Sub"]  # Y-GAN's score math
    assert result.engine.name == "global.sm87.trt8.6.1.fp16.b4.engine"


def test_parser_errors_name_the_node(monkeypatch, fake_gpu, bundle_copy):
    trt = FakeTensorRT("10.3.0.30", fail_node="/Softmax")
    trt.cuda = fake_gpu[1]
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    spec = load_bundle(bundle_copy).card.stages[0]
    with pytest.raises(AdedgeError) as caught:
        tb.ensure_engine(bundle_copy, spec, precision="fp16")
    text = caught.value.one_line()
    assert "cannot parse global.fp16.onnx: node '/Softmax', op Softmax: no importer" in text
    assert not list((bundle_copy / "engines").glob("*.engine"))


def test_backend_scores_from_a_worker_thread_like_onnxruntime(fake_gpu, bundle_copy, digit_frames):
    """Detector(backend="tensorrt") end to end: engine built on first use, pinned buffers,
    named tensors, chunks of max batch, and the primary context pushed on the calling thread."""
    _, cuda = fake_gpu
    detector = Detector(bundle_copy, backend="tensorrt:fp16")
    backend = detector.stages[0].backend
    assert backend.max_batch == 8 and backend.precision == "fp16"
    expected = Detector(bundle_copy, backend="onnxruntime:fp16")
    frames = digit_frames[:19]  # more than two chunks of 8
    results: dict[str, np.ndarray] = {}

    def work() -> None:
        results["scores"] = np.array([r.score for r in detector.score_frames(frames)])

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    reference = np.array([r.score for r in expected.score_frames(frames)])
    np.testing.assert_allclose(results["scores"], reference, rtol=0, atol=1e-6)
    pushes = [t for kind, t in cuda.events if kind == "push"]
    pops = [t for kind, t in cuda.events if kind == "pop"]
    assert len(pushes) == len(pops) and worker.ident in pushes  # balanced, on the worker
    assert sum(t == worker.ident for t in pushes) == 3  # 19 frames = 3 engine calls
    backend.close()  # frees every device buffer, inside the context
    assert cuda.memory.blocks == {} and cuda.events[-1][0] == "pop"


def test_backend_rejects_an_engine_that_does_not_load(fake_gpu, bundle_copy):
    spec = load_bundle(bundle_copy).card.stages[0]
    result = tb.ensure_engine(bundle_copy, spec, precision="fp32")
    result.engine.write_bytes(b"not an engine")  # the sidecar still says fresh
    from adedge.errors import BundleError

    with pytest.raises(BundleError, match="cannot load the engine") as caught:
        Detector(bundle_copy, backend="tensorrt:fp32")
    assert "rebuilt" in caught.value.hint


def test_export_builds_engines_and_records_them(fake_gpu, trained_run, tmp_path):
    from adedge.export.bundle_writer import export_bundle
    from adedge.export.options import ExportOptions

    out = tmp_path / "model"
    export_bundle(
        ExportOptions(trained_run, out, formats=("onnx", "engine"), half=True, max_batch=16),
        log=lambda _: None,
    )
    card = load_bundle(out).card
    engines = card.metrics["engines"]["global"]
    assert engines["file"] == "engines/global.sm87.trt10.3.0.30.fp16.b16.engine"
    assert (out / engines["file"]).is_file() and card.stages[0].engine.max_batch == 16
    assert "strongly typed" in engines["build"]


# --- real GPUs ---------------------------------------------------------------------------------


def real_gpu() -> str | None:
    """Why real GPU tests cannot run here (None: they can)."""
    try:
        import tensorrt  # noqa: F401
    except Exception:
        return "TensorRT is not installed"
    try:
        tb.device_capability()
    except AdedgeError as exc:
        return exc.message
    return None


gpu = pytest.mark.skipif(real_gpu() is not None, reason=f"no GPU/TensorRT: {real_gpu()}")


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_real_engine_scores_like_onnxruntime(ygan_bundle, tmp_path, digit_frames, precision):
    copy = tmp_path / "bundle"
    shutil.copytree(ygan_bundle, copy)
    engine = Detector(copy, backend=f"tensorrt:{precision}")
    reference = Detector(copy)
    a = np.array([r.score for r in reference.score_frames(digit_frames)])
    b = np.array([r.score for r in engine.score_frames(digit_frames)])
    assert spearman(a, b) >= 0.999 and np.abs(a - b).max() < 5e-3
    files = list((copy / "engines").glob(f"global.sm*.trt*.{precision}.b8.engine"))
    assert len(files) == 1
    again = Detector(copy, backend=f"tensorrt:{precision}")  # reuses the cached engine
    assert again.stages[0].backend.engine_path == files[0]


# --- `adedge engines build` (what deploy/jetson/build-engines.sh runs) ---------------------------


def test_engines_build_command(monkeypatch, capsys, tmp_path, mean_bundle):
    """Bad options and a wrong --model are one line each; then, where TensorRT is missing,
    one line saying so and how to stream without it; where it is present, every stage's
    engine is built or found up to date."""
    import importlib.util

    from cli_helpers import assert_one_line_error, run_cli

    code, _, err = run_cli(monkeypatch, capsys, "engines", "build", "--precision", "int8")
    assert_one_line_error(code, err, "--precision int8", "fp16")
    code, _, err = run_cli(monkeypatch, capsys, "engines", "build", "--model", tmp_path / "x")
    assert_one_line_error(code, err, "does not exist")
    bundle = tmp_path / "bundle"
    shutil.copytree(mean_bundle, bundle)
    code, out, err = run_cli(monkeypatch, capsys, "engines", "build", "--model", bundle)
    if importlib.util.find_spec("tensorrt") is None:
        assert_one_line_error(code, err, "TensorRT engines cannot be used here", "onnxruntime")
        assert not (bundle / "engines").exists()
    else:
        assert code == 0, err
        assert out.startswith("global: ") and any((bundle / "engines").glob("global.*.engine"))
