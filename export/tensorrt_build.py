"""Moved to :mod:`adedge.runtime.backends.engines`: building and caching engines is code that
runs on the device (this name stays for one release)."""

from adedge.runtime.backends.engine_plan import *  # noqa: F403
from adedge.runtime.backends.engines import *  # noqa: F403
