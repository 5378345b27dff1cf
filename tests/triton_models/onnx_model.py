"""Triton Python-backend model: runs ``model.onnx`` beside this file with ONNX Runtime (CPU).

A test stand-in for Triton's ``onnxruntime_onnx`` backend, which the ``nvidia-pytriton``
wheel does not carry. Dynamic batching hands ``execute`` several requests at once: their
inputs are joined into one ONNX Runtime call and the outputs split back per request, as the
real backend does. Runs inside the server's Python stub (numpy<2, onnxruntime from
.venv-pytriton); adedge is not importable there.
"""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        folder = os.path.join(args["model_repository"], args["model_version"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(
            os.path.join(folder, "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        self.inputs = [entry["name"] for entry in config["input"]]
        self.outputs = [entry["name"] for entry in config["output"]]

    def execute(self, requests):
        feeds = {}
        for name in self.inputs:
            parts = [pb_utils.get_input_tensor_by_name(r, name).as_numpy() for r in requests]
            feeds[name] = np.concatenate(parts)
        sizes = [
            pb_utils.get_input_tensor_by_name(r, self.inputs[0]).as_numpy().shape[0]
            for r in requests
        ]
        values = self.session.run(self.outputs, feeds)
        responses = []
        start = 0
        for size in sizes:
            tensors = [
                pb_utils.Tensor(name, np.ascontiguousarray(value[start : start + size]))
                for name, value in zip(self.outputs, values, strict=True)
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += size
        return responses
