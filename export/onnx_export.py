"""Moved: the export is :mod:`adedge.export.bundle_writer` (with :mod:`~adedge.export.options`,
:mod:`~adedge.export.trace`, :mod:`~adedge.export.precision_graphs` and
:mod:`~adedge.export.parity`). These names stay importable from here for one release."""

from adedge.export.bundle_writer import export_bundle  # noqa: F401
from adedge.export.options import ExportOptions  # noqa: F401
from adedge.export.parity import parity_check  # noqa: F401
from adedge.export.trace import (  # noqa: F401
    INPUT_NAME,
    OPSET,
    rebuild_scorer,
    stage_plan_of,
    trace_to_onnx,
)
