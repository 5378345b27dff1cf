"""adedge.runtime: scoring frames with an exported bundle. numpy + OpenCV + a backend; no torch."""
