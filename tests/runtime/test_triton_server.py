"""The real Triton server of the tests (nvidia-pytriton's tritonserver, standalone) serves
adedge's configs through its Python backend: ready, the card in the served config, and the
ONNX graph's outputs for a batch (KServe v2 JSON, nothing of adedge's client involved)."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from adedge.runtime.triton_config import card_from_config

pytestmark = pytest.mark.runtime


def test_server_is_ready_and_serves_the_card(triton) -> None:
    server, bundles, models = triton
    assert httpx.get(f"{server.http_url}/v2/health/ready").status_code == 200
    for key, model in models.items():
        config = httpx.get(f"{server.http_url}/v2/models/{model}/config").json()
        assert config["backend"] == "python"
        card, stage = card_from_config(config, model)
        assert model.endswith("_" + stage)
        assert card.method == ("mean" if key == "mean" else "tile-max")


def test_python_backend_runs_the_graph(triton) -> None:
    server, _, models = triton
    batch = np.random.default_rng(0).random((3, 1, 32, 32), dtype=np.float32)
    body = {
        "inputs": [
            {
                "name": "image",
                "shape": list(batch.shape),
                "datatype": "FP32",
                "data": batch.ravel().tolist(),
            }
        ],
        "outputs": [{"name": "score"}],
    }
    reply = httpx.post(f"{server.http_url}/v2/models/{models['tiles']}/infer", json=body)
    (score,) = reply.json()["outputs"]
    assert score["shape"] == [3, 1]
    np.testing.assert_allclose(score["data"], batch.reshape(3, -1).max(axis=1), rtol=0, atol=0)
