"""JSON text of the results the CLI prints and the server answers: JSON has no NaN or infinity."""
from __future__ import annotations

import json


def to_json(value, **kwargs) -> str:
    """JSON text of value, with every number that JSON cannot hold (an infinite loss, NaN) written as null."""
    finite = json.loads(json.dumps(value), parse_constant=lambda name: None)  # called for Infinity, -Infinity, NaN
    return json.dumps(finite, allow_nan=False, ensure_ascii=False, **kwargs)
