"""The service's models: one :class:`SharedEngine` each, loaded at start, swapped at run time.

A swap (``POST /api/models/{name}/load``, or a watched bundle folder that changed on disk)
loads the new bundle beside the running one, checks it on the newest frames of the
model's cameras (``swap.py``) and puts it in between two batches; a bundle that fails a
check is refused and the running model goes on. Swaps of one model run one at a time. A
bundle loaded at run time is remembered in ``settings.json`` so a restart keeps it.

A model served by Triton (``backend: triton://...``) takes new versions from its
repository, which the server loads: with ``watch: true`` the service swaps in the server's
new card (checked as any swap); with ``fallback: local`` an API load gives it a new fallback
bundle, which must be the server's model, so rolling out a version is: add it to the
repository, then load its bundle on each edge box.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from adedge.bundle import CARD_NAME, sha256_file
from adedge.errors import AdedgeError
from adedge.runtime.detector import Detector
from adedge.runtime.serve.api_types import ModelInfo, NotFound, Refused, SwapReport
from adedge.runtime.serve.config import Fallback, ModelConfig
from adedge.runtime.serve.engine import SharedEngine
from adedge.runtime.serve.event_types import ModelRef
from adedge.runtime.serve.metrics import ServiceMetrics
from adedge.runtime.serve.model_watch import FolderWatch, ServedCardWatch, card_digest
from adedge.runtime.serve.settings import RuntimeSettings
from adedge.runtime.serve.stats import ModelState, ModelStats
from adedge.runtime.serve.swap import CheckFrame, check_candidate

Log = Callable[[str], None]
RecentFrames = Callable[[str], list[CheckFrame]]  # model name -> its cameras' newest frames
WATCH_INTERVAL_S = 2.0  # how often watched bundle folders are looked at


def model_ref(name: str, model: ModelConfig, bundle: Path | None, detector: Detector) -> ModelRef:
    """What events record of the model that scored them: the sha256 of its card file (of a
    Triton model's card as sorted JSON: the server's copy has no file)."""
    if model.remote:
        return ModelRef(name, card_digest(detector.card.to_dict()), model.backend_spec)
    card = Path(bundle or "") / CARD_NAME
    return ModelRef(name, sha256_file(card) if card.is_file() else "", model.backend_spec)


class ModelPool:
    """Every model of the service (see the module docstring)."""

    def __init__(
        self,
        models: dict[str, ModelConfig],
        settings: RuntimeSettings,
        metrics: ServiceMetrics,
        log: Log,
        recent_frames: RecentFrames,
    ) -> None:
        self.configs = dict(models)
        self.settings = settings
        self.metrics = metrics
        self.log = log
        self.recent_frames = recent_frames
        self.engines: dict[str, SharedEngine] = {}
        # the bundle each model runs now (a Triton model: its local fallback, or None)
        self.bundles: dict[str, Path | None] = {}
        self._swap_locks: dict[str, threading.Lock] = {}
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        for name, model in models.items():
            self._add_engine(name, model)

    # --- life -------------------------------------------------------------------------
    def _add_engine(self, name: str, model: ModelConfig) -> SharedEngine:
        self.configs[name] = model
        self.bundles[name] = model.bundle  # a Triton model's: its local fallback, or None
        if model.bundle is not None:
            self.bundles[name] = self.settings.model_bundle(name, model.bundle) or model.bundle
        self._swap_locks.setdefault(name, threading.Lock())
        engine = SharedEngine(
            name,
            lambda: self._detector(name, self.bundles[name]),
            model.max_batch,
            model.max_delay_ms,
            observe=lambda frames, rows, seconds: self.metrics.batch(name, rows, seconds),
        )
        self.engines[name] = engine
        return engine

    def location(self, name: str) -> str:
        """Where model ``name`` runs: its bundle folder, or its Triton model's address."""
        model = self.configs[name]
        return model.backend if model.remote else str(self.bundles[name])

    def _detector(self, name: str, bundle: Path | None, backend: str | None = None) -> Detector:
        model = self.configs[name]
        detector = Detector(bundle, backend=backend or model.backend_spec, threads=model.threads)
        detector.card.warn_if_unknown_method(self.log)
        return detector

    def load(self, name: str) -> bool:
        """Load and start model ``name`` (at start, or added by a config reload)."""
        engine = self.engines[name]
        self.log(f"loading model {name} from {self.location(name)}")
        if engine.load():
            assert engine.detector is not None
            engine.ref = model_ref(name, self.configs[name], self.bundles[name], engine.detector)
            engine.start()
        else:
            self.log(f"model {name} failed to load: {engine.error}; its cameras are errored")
        self.metrics.model_up(name, engine.state is ModelState.READY)
        return engine.state is ModelState.READY

    def start(self) -> None:
        for name in self.engines:
            self.load(name)
        if any(model.watch for model in self.configs.values()):
            self._start_watcher()

    def _start_watcher(self) -> None:
        if self._watcher is None:
            self._watcher = threading.Thread(target=self._watch, name="model-watch", daemon=True)
            self._watcher.start()

    def add(self, name: str, model: ModelConfig) -> None:
        """A model added by a config reload: built, loaded and started."""
        self._add_engine(name, model)
        self.load(name)
        if model.watch:
            self._start_watcher()

    def tune(self, name: str, model: ModelConfig) -> None:
        """Batching and watch settings changed by a config reload: applied at once."""
        engine = self.engines[name]
        self.configs[name] = model
        engine.max_batch, engine.max_delay = model.max_batch, model.max_delay_ms / 1000.0
        if model.watch:
            self._start_watcher()

    def remove(self, name: str) -> None:
        """A model no camera uses any more (config reload)."""
        engine = self.engines.pop(name)
        engine.stop()
        self.configs.pop(name)
        self.bundles.pop(name)

    def stop(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join()
        for engine in self.engines.values():
            engine.stop()

    # --- swaps ------------------------------------------------------------------------
    def swap(self, name: str, bundle: Path | None, model: ModelConfig | None = None) -> SwapReport:
        """Load ``bundle`` for model ``name`` (with ``model``'s backend and threads when a
        reload changed them), check it and swap it in; raises NotFound or Refused. For a
        Triton model (``model`` from a reload) ``bundle`` is its fallback or None."""
        engine = self.engines.get(name)
        if engine is None:
            known = ", ".join(sorted(self.engines)) or "none"
            raise NotFound(f"no model '{name}'", f"the models are: {known}")
        remote = (model or self.configs[name]).remote
        if remote and model is None and self.configs[name].fallback is Fallback.NONE:
            raise Refused(
                f"model '{name}' runs on Triton ({self.configs[name].backend}) without a local "
                "fallback: its new versions come from the server's repository",
                "add the bundle with `adedge triton-repo BUNDLE --out REPO`; with watch: true "
                "the service checks and swaps in the server's new card",
            )
        if bundle is not None:
            bundle = Path(bundle).expanduser().absolute()
        if bundle is None and not remote:
            raise Refused(f"no bundle given for model '{name}'", "give the bundle folder")
        if bundle is not None and not (bundle / CARD_NAME).is_file():
            self.metrics.model_swap(name, False)
            raise Refused(
                f"{bundle} is not a bundle (no {CARD_NAME})",
                "give the folder that `adedge export` wrote, on the service's machine",
            )
        with self._swap_locks[name]:
            previous, old_location = self.configs[name], self.location(name)
            if model is not None:
                self.configs[name] = model
            try:
                report = self._swap_checked(name, engine, bundle, old_location)
            except BaseException:
                self.configs[name] = previous
                raise
        config_bundle = self.configs[name].bundle
        if config_bundle is not None:  # a bundle, or a Triton model's fallback, loaded now
            self.settings.save_model(name, bundle, config_bundle)
        return report

    def _swap_checked(
        self, name: str, engine: SharedEngine, bundle: Path | None, old_location: str
    ) -> SwapReport:
        model = self.configs[name]
        try:
            new = self._detector(name, bundle)
            reference = None
            # a reduced precision, another engine or a Triton server: held to the decisions
            # of the bundle's own FP32 graph where there is a bundle
            if model.backend_spec != "onnxruntime" and bundle is not None:
                reference = self._detector(name, bundle, backend="onnxruntime")
        except AdedgeError as error:
            self.metrics.model_swap(name, False)
            raise Refused(
                f"bundle {bundle} refused for model '{name}': {error.message}", error.hint
            ) from None
        except Exception as error:  # noqa: BLE001 - any load failure refuses the bundle
            self.metrics.model_swap(name, False)
            raise Refused(
                f"bundle {bundle} refused for model '{name}': {type(error).__name__}: {error}",
                "re-export it",
            ) from None
        old = engine.detector
        try:
            result = check_candidate(name, new, old, self.recent_frames(name), reference)
        except Refused:
            self.metrics.model_swap(name, False)
            raise
        ref = model_ref(name, model, bundle, new)
        old_ref = engine.ref
        replaced = engine.swap(new, ref)
        if replaced is not None:
            replaced.close()  # a Triton model's connections (no batch uses it any more)
        self.bundles[name] = bundle
        self.metrics.model_up(name, True)
        self.metrics.model_swap(name, True)
        self.log(
            f"model {name}: swapped to {self.location(name)} (generation {engine.generation}, "
            f"{len(result.frames)} frame(s) checked)"
        )
        return SwapReport(
            model=name,
            old_bundle=old_location,
            new_bundle=self.location(name),
            old_sha256=None if old_ref is None else old_ref.sha256,
            new_sha256=ref.sha256,
            generation=engine.generation,
            frames_checked=result.frames,
            same_graphs=result.same_graphs,
            max_abs_diff=result.max_abs_diff,
            new_threshold=new.threshold,
            decisions_changed=result.decisions_changed,
            swapped_at=engine.loaded_at or time.time(),
        )

    def _watch(self) -> None:
        """Check and swap in new versions of the models with ``watch: true``
        (``model_watch.py``: a bundle folder that changed, a Triton model's new card)."""
        folders = {n: FolderWatch(b) for n, b in self.bundles.items() if b is not None}
        served: dict[str, ServedCardWatch] = {}
        while not self._stop.wait(WATCH_INTERVAL_S):
            for name in list(self.engines):
                model, bundle = self.configs.get(name), self.bundles.get(name)
                if model is None or not model.watch:
                    continue
                if model.remote:
                    engine = self.engines[name]
                    if not served.setdefault(name, ServedCardWatch()).changed(engine.detector):
                        continue
                    what = f"{model.backend} carries a new card"
                else:
                    if bundle is None:
                        continue
                    watch = folders.get(name)
                    if watch is None or watch.folder != bundle:
                        folders[name] = FolderWatch(bundle)
                        continue
                    if not watch.changed():
                        continue
                    what = f"{bundle} changed on disk"
                self.log(f"model {name}: {what}; checking it")
                try:
                    self.swap(name, bundle, model)
                except (NotFound, Refused) as error:
                    self.log(f"model {name}: the new version was refused: {error.one_line()}")

    # --- what the API reads -----------------------------------------------------------
    def stats(self, cameras: dict[str, str]) -> list[ModelStats]:
        """``cameras``: camera -> model name."""
        stats = []
        for name, engine in list(self.engines.items()):
            batches = engine.stats.batches
            stats.append(
                ModelStats(
                    name=name,
                    bundle=self.location(name),
                    sha256=None if engine.ref is None else engine.ref.sha256,
                    backend=self.configs[name].backend_spec,
                    state=engine.state,
                    cameras=[c for c, m in cameras.items() if m == name],
                    queue_depth=engine.queue_depth(),
                    batches=batches,
                    frames=engine.stats.frames,
                    mean_batch_rows=(engine.stats.rows / batches) if batches else None,
                    error=engine.error,
                )
            )
        return stats

    def info(self, cameras: dict[str, str]) -> list[ModelInfo]:
        infos = []
        for stats in self.stats(cameras):
            engine = self.engines[stats.name]
            detector = engine.detector
            infos.append(
                ModelInfo(
                    **{**stats.to_dict(), "state": stats.state.value},
                    method=None if detector is None else detector.card.method,
                    card_threshold=None if detector is None else detector.threshold,
                    generation=engine.generation,
                    loaded_at=engine.loaded_at,
                    watch=self.configs[stats.name].watch,
                )
            )
        return infos
