"""The profile format as a JSON Schema, generated from the pydantic models in vramc.load.schema.

Editors check and complete profiles with it (yaml-language-server reads the
`# yaml-language-server: $schema=...` line at the top of a profile). One schema for every kind:
`oneOf` hardware, model, deployment and a file of deployments. A file that two kinds accept (only
`name:` and `description:`) is one vramc cannot place either (VR004), so `oneOf` refuses it too.

The copy shipped in the package (vramc/data) and the one published in the repository (schema/)
are this function's output; `vramc schema` prints it and tests/test_json_schema.py keeps both in
step with the models.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FILE_NAME = "vramc-profile.schema.json"
PACKAGED = Path(__file__).resolve().parents[1] / "data" / FILE_NAME
DIALECT = "https://json-schema.org/draft/2020-12/schema"

# pydantic writes a bound it cannot place in JSON Schema (a `ge=` on a size that may be a string)
# under its own name; JSON Schema has no such keyword, so it is left out (vramc still checks it).
_PYDANTIC_ONLY = ("ge", "gt", "le", "lt")


def _clean(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            k: _clean(v)
            for k, v in node.items()
            if not (k in _PYDANTIC_ONLY and "type" not in node and "anyOf" in node)
        }
    if isinstance(node, list):
        return [_clean(v) for v in node]
    return node


def profile_schema() -> dict[str, Any]:
    """The JSON Schema of a profile file of any kind."""
    from pydantic import BaseModel
    from pydantic.json_schema import models_json_schema

    from vramc.load import schema

    kinds: list[tuple[str, type[BaseModel]]] = [
        ("hardware", schema.Hardware),
        ("model", schema.Model),
        ("deployment", schema.DeploymentBody),
        ("deployments", schema.DeploymentFile),
    ]
    refs, defs = models_json_schema([(model, "validation") for _, model in kinds], ref_template="#/$defs/{model}")
    one_of = []
    for kind, model in kinds:
        ref = dict(refs[(model, "validation")])
        ref["title"] = f"a {kind} profile" if kind != "deployments" else "a file of deployments"
        one_of.append(ref)
    cleaned: dict[str, Any] = _clean(
        {
            "$schema": DIALECT,
            "title": "vramc profile",
            "description": "A vramc profile: hardware, model, deployment or a file of deployments "
            "(see `vramc check` and README.md, Profiles).",
            "oneOf": one_of,
            "$defs": defs["$defs"],
        }
    )
    return cleaned


def render() -> str:
    """The schema as the text written to vramc/data and schema/ (stable: keys in model order)."""
    return json.dumps(profile_schema(), indent=2, ensure_ascii=False) + "\n"
