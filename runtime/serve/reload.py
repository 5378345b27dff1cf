"""What a config reload changes (``POST /api/config/reload``): the difference between the
running config and the file's, sorted by how each part can take it.

* Models: a new bundle, backend, precision, fallback or thread count is a model swap, checked as an
  API load is (``swap.py``); ``max_batch``, ``max_delay_ms`` and ``watch`` apply at once;
  new models load; models no camera names any more stop.
* Cameras: threshold, alarm rule and the detection switch apply to the running camera (and
  a value edited in the file replaces one set at run time); any other change (source,
  model, masks, evidence, fps...) restarts that camera alone: its open event ends as
  ``shutdown``. New cameras start, removed ones stop.
* ``node``, ``mqtt``, ``webhooks``, ``api`` and ``storage`` are wired into running
  connections and files: a change there is reported as needing a restart, not applied.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from adedge.runtime.serve.config import CameraConfig, ModelConfig, ServeConfig

RESTART_SECTIONS = ("node", "mqtt", "webhooks", "api", "storage")
LIVE_CAMERA_KEYS = frozenset({"threshold", "alarm", "detect"})
LIVE_MODEL_KEYS = frozenset({"max_batch", "max_delay_ms", "watch"})


@dataclass
class ReloadPlan:
    restart_required: list[str] = field(default_factory=list)
    models_added: list[str] = field(default_factory=list)
    models_removed: list[str] = field(default_factory=list)
    models_swapped: list[str] = field(default_factory=list)  # bundle/backend/threads
    models_tuned: list[str] = field(default_factory=list)  # batching, watch
    cameras_added: list[str] = field(default_factory=list)
    cameras_removed: list[str] = field(default_factory=list)
    cameras_restarted: list[str] = field(default_factory=list)
    cameras_tuned: dict[str, set[str]] = field(default_factory=dict)  # camera -> keys

    def applied(self) -> list[str]:
        """One line per change applied, for the report and the log."""
        lines = [f"model {name} added" for name in self.models_added]
        lines += [f"model {name} swapped" for name in self.models_swapped]
        lines += [f"model {name} batching/watch updated" for name in self.models_tuned]
        lines += [f"model {name} removed" for name in self.models_removed]
        lines += [f"camera {name} added" for name in self.cameras_added]
        lines += [f"camera {name} restarted" for name in self.cameras_restarted]
        lines += [
            f"camera {name}: {', '.join(sorted(keys))} updated"
            for name, keys in self.cameras_tuned.items()
        ]
        lines += [f"camera {name} removed" for name in self.cameras_removed]
        return lines


def plan_reload(running: ServeConfig, new: ServeConfig) -> ReloadPlan:
    plan = ReloadPlan()
    for section in RESTART_SECTIONS:
        if getattr(running, section) != getattr(new, section):
            plan.restart_required.append(section)
    for name, model in new.models.items():
        old = running.models.get(name)
        if old is None:
            plan.models_added.append(name)
            continue
        changed = _changed(old, model)
        if changed - LIVE_MODEL_KEYS:
            plan.models_swapped.append(name)
        elif changed:
            plan.models_tuned.append(name)
    plan.models_removed = [name for name in running.models if name not in new.models]
    for name, camera in new.cameras.items():
        old_camera = running.cameras.get(name)
        if old_camera is None:
            plan.cameras_added.append(name)
            continue
        changed = _changed(old_camera, camera)
        if changed - LIVE_CAMERA_KEYS or camera.model in plan.models_added:
            plan.cameras_restarted.append(name)
        elif changed:
            plan.cameras_tuned[name] = changed
    plan.cameras_removed = [name for name in running.cameras if name not in new.cameras]
    return plan


def _changed(old: ModelConfig | CameraConfig, new: ModelConfig | CameraConfig) -> set[str]:
    return {key for key in type(new).model_fields if getattr(old, key) != getattr(new, key)}
