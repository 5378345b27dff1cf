"""Triton's own schema for ``config.pbtxt``: ``tritonclient``'s ``model_config_pb2`` parsed
with protobuf's ``text_format``, so a written config is checked by the parser the server
uses, not by our reading of its documentation.

This file imports nothing of adedge: ``tritonclient[grpc]`` pins ``protobuf<7``, so it often
lives in a venv of its own (``.venv-triton``, ``make triton-venv``) and this file runs there
as a script: ``python triton_schema.py CONFIG...`` prints one JSON list of the parsed
configs (``MessageToDict``, proto field names), or one line ``error: ...`` and exits 1.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def parse_config_text(text: str) -> dict[str, Any]:
    """A config's text parsed into Triton's ``ModelConfig`` message, returned as a dict.

    Raises ImportError where tritonclient (or its protobuf) is missing and ValueError
    (protobuf's ParseError) naming the line where the text breaks the schema."""
    from google.protobuf import json_format, text_format
    from tritonclient.grpc import model_config_pb2

    message = text_format.Parse(text, model_config_pb2.ModelConfig())
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def schema_version() -> str:
    from importlib.metadata import version

    return f"tritonclient {version('tritonclient')}, protobuf {version('protobuf')}"


def main(argv: list[str]) -> int:
    parsed = []
    for path in argv:
        try:
            with open(path, encoding="utf-8") as handle:
                parsed.append(parse_config_text(handle.read()))
        except Exception as error:  # one line for the caller, whatever broke
            print(f"error: {path}: {type(error).__name__}: {error}".replace("\n", " "))
            return 1
    print(json.dumps({"schema": schema_version(), "configs": parsed}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
