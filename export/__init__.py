"""adedge.export: torch -> ONNX bundles, pruned to the inference subgraph, parity-checked."""
