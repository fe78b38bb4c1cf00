"""What each route answers, as JSON Schema for the OpenAPI document (`create_app(...).openapi()`).

The routes return plain dicts (no response models validated at run time); these schemas say what
those dicts hold, so a client -- and the fuzz test tests/fuzz/test_api_schema.py -- can check
every answer against them. Nullable fields are `["T", "null"]` (OpenAPI 3.1).
"""

from __future__ import annotations

from typing import Any

from ..controls import KEYS

JSON = dict[str, Any]

INT = {"type": "integer"}
NUM_OR_NULL = {"type": ["number", "null"]}  # NaN/Inf are sent as null (jsonsafe.py)
INT_OR_NULL = {"type": ["integer", "null"]}
STR = {"type": "string"}
STR_OR_NULL = {"type": ["string", "null"]}
ANY: JSON = {}


def obj(props: JSON, *, extra: Any = False, optional: tuple[str, ...] = ()) -> JSON:
    """An object with exactly `props` (all required but `optional`); `extra` allows more keys."""
    return {
        "type": "object",
        "properties": props,
        "required": [k for k in props if k not in optional],
        "additionalProperties": extra,
    }


def array(items: JSON) -> JSON:
    return {"type": "array", "items": items}


def body(schema: JSON, media: str = "application/json") -> JSON:
    """The `openapi_extra` of a route whose (required) request body is `schema`."""
    return {"requestBody": {"required": True, "content": {media: {"schema": schema}}}}


def pending(schema: JSON, ident: int) -> JSON:
    """A model request's answer while it is pending, shaped by its `schema`: lists [], objects {},
    everything else None (routes/projections.py request_status fills it in)."""
    out: JSON = {
        k: [] if p.get("type") == "array" else {} if p.get("type") == "object" else None
        for k, p in schema["properties"].items()
    }
    out.update(id=ident, status="pending")
    return out


def ok(schema: JSON, description: str) -> dict[int | str, JSON]:
    """The `responses` entry of a JSON route answering `schema` with 200."""
    return {200: {"description": description, "content": {"application/json": {"schema": schema}}}}


PNG: dict[int | str, JSON] = {
    200: {
        "description": "a PNG picture",
        "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
    }
}

CHECKPOINT = obj({"name": STR, "file": STR, "step": INT_OR_NULL, "time": {"type": "number"},
                  "bytes": INT, "net": STR_OR_NULL, "fits": {"type": ["boolean", "null"]}})  # fmt: skip
# net: what the checkpoint's metadata names (a zoo net, "layer spec"); fits: its weights fit the net
# training now (null: unsaid) -- server/controls.py describe_checkpoints
RUNS = obj({"runs": array(obj({
    "name": STR, "status": STR_OR_NULL, "last_step": INT_OR_NULL, "model": ANY,
    "created": NUM_OR_NULL, "error": STR_OR_NULL,
}))})  # fmt: skip
STORAGE = obj({
    "bytes": INT, "file_bytes": INT, "budget_bytes": INT_OR_NULL, "over_budget": {"type": "boolean"},
    "thinned": array(obj({"layer": STR, "kind": STR, "dropped": INT, "by_retention": INT,
                          "by_budget": INT})),
})  # fmt: skip  # RunReader.storage(): the run's size against its byte budget
RUN = obj({
    "name": STR, "meta": {"type": "object"}, "config": {"type": "object"}, "layers": ANY,
    "layers_step": INT_OR_NULL, "last_step": INT_OR_NULL, "status": STR,
    "stale": {"type": "boolean"}, "checkpoints": array(CHECKPOINT),
    "has_test_images": {"type": "boolean"}, "size": STORAGE,
})  # fmt: skip
POINT = {"type": "array", "items": NUM_OR_NULL, "minItems": 2, "maxItems": 2}  # [step, value]
SCALARS = obj({"last_step": INT_OR_NULL,
               "scalars": {"type": "object", "additionalProperties": array(POINT)}})  # fmt: skip
STATS = obj({"last_step": INT_OR_NULL,
             "stats": array(obj({"step": INT, "layer": STR}, extra=True))})  # fmt: skip
SERIES = {"type": "array", "items": INT, "minItems": 3, "maxItems": 3}  # first, last, count
SNAPSHOTS = obj({
    "steps": array(INT),
    "series": {"type": "object", "additionalProperties": {
        "type": "object", "additionalProperties": SERIES}},
})  # fmt: skip
SNAPSHOT_STEPS = obj({"layer": STR, "kind": STR, "steps": array(INT)})
JSON_VALUE = obj({"key": STR, "step": INT, "value": ANY})
CONTROL = obj({"id": INT, "key": STR, "value": ANY, "time": {"type": "number"},
               "applied_step": INT_OR_NULL, "result": ANY})  # fmt: skip
CONTROLS = obj({"controls": array(CONTROL)})
SENT = obj({"id": INT})
UPLOAD = obj({
    "id": INT, "status": {"enum": ["pending", "done", "failed"]}, "step": INT_OR_NULL,
    "top": {"type": "array"}, "layers": array(obj({"name": STR, "kinds": array(STR)})),
    "error": STR_OR_NULL,
})  # fmt: skip

#: The body of POST .../controls, as the page sends it (check_control validates the values).
CONTROL_BODY = body(obj({"key": {"type": "string", "enum": list(KEYS)}, "value": ANY}, optional=("value",), extra=True))
#   (other keys are ignored)
#: The body of POST .../uploads: one multipart field "image" (routes/uploads.py reads it itself).
UPLOAD_BODY = body(obj({"image": {"type": "string", "format": "binary"}}), "multipart/form-data")
