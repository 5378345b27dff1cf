"""adedge: edge-deployable, compiled visual anomaly detection.

The top-level package holds the contracts shared by training, export and the runtime
(the model bundle and its card, the method registry, errors, preprocessing, metrics, data
readers). It never imports torch at module level: a Jetson runs the stream without it.
"""

__version__ = "0.1.0"
