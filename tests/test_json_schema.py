"""The profile format's JSON Schema (vramc.load.json_schema): generated from the pydantic models,
shipped in the package, published in schema/, named by every shipped profile, and in agreement
with what vramc itself accepts."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from vramc.cli.commands import app
from vramc.load import profiles, yamlpos
from vramc.load.json_schema import PACKAGED, render

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = ROOT / "schema" / "vramc-profile.schema.json"
SHIPPED = sorted((ROOT / "profiles").rglob("*.yaml"))
OK = sorted((ROOT / "tests" / "fixtures" / "profiles" / "ok").rglob("*.yaml"))
BAD = sorted((ROOT / "tests" / "fixtures" / "profiles" / "bad").rglob("*.yaml"))
MODELINE = re.compile(r"^# yaml-language-server: \$schema=(\S+)$", re.M)


@pytest.fixture(scope="module")
def validator():
    schema = json.loads(PUBLISHED.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _errors(validator, data) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}" for e in validator.iter_errors(data)]


def test_published_and_packaged_schema_are_the_models_schema():
    text = render()
    hint = "regenerate: vramc schema is the packaged copy; python -c 'from vramc.load.json_schema import render; ...'"
    assert PACKAGED.read_text() == text, hint
    assert PUBLISHED.read_text() == text, hint
    assert json.loads(text)["oneOf"], "one branch per kind of profile"


def test_vramc_schema_prints_it():
    r = CliRunner().invoke(app, ["schema"])
    assert r.exit_code == 0, r.output
    assert r.output == render()


@pytest.mark.parametrize("path", SHIPPED + OK, ids=lambda p: str(p.relative_to(ROOT)))
def test_shipped_profiles_and_ok_fixtures_are_schema_valid(validator, path):
    loaded = yamlpos.load_file(path)
    assert not loaded.diagnostics
    assert _errors(validator, loaded.data) == []


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_shipped_profiles_name_the_published_schema(path):
    # yaml-language-server resolves a relative $schema against the profile's own folder
    m = MODELINE.search(path.read_text())
    assert m and path.read_text().startswith(m.group(0)), f"{path}: first line must be the modeline"
    assert (path.parent / m.group(1)).resolve() == PUBLISHED


@pytest.mark.parametrize("path", BAD, ids=lambda p: str(p.relative_to(ROOT)))
def test_schema_agrees_with_vramc_on_bad_fixtures(validator, path):
    """What vramc's models accept the JSON Schema accepts (the findings of these fixtures come after
    validation), and what they refuse it refuses: an editor marks the same files as `vramc check`."""
    data = yamlpos.load_file(path).data
    kind = profiles._kind_of(data) if isinstance(data, dict) else None
    if kind is None:  # not a mapping, or no kind (VR001, VR004): no branch of the oneOf is meant
        assert isinstance(data, dict) is False or _errors(validator, data)
        return
    try:
        profiles._schema_for(kind).model_validate(data)
        accepted = True
    except ValidationError:
        accepted = False
    assert (not _errors(validator, data)) == accepted, _errors(validator, data)


def _hardware(**gpu):
    return {"kind": "hardware", "name": "h", "gpus": [{"name": "RTX 4090", **gpu}]}


@pytest.mark.parametrize(
    ("vram", "valid"),
    [
        ("24GiB", True),
        ("24 gb", True),
        (" 1.5T ", True),
        ("512M", True),
        ("100b", True),
        (24576, True),
        (0.5, True),
        ("24 GiBs", False),
        ("24ib", False),
        ("-1GiB", False),
        (-1, False),
        ("GiB", False),
        (True, False),
        (None, False),
        ([24], False),
    ],
)
def test_sizes_are_written_as_vramc_reads_them(validator, vram, valid):
    assert (not _errors(validator, _hardware(vram=vram))) == valid


@pytest.mark.parametrize(
    ("settings", "valid"),
    [
        ({"flash_attn": False}, True),  # YAML 1.1 `off`
        ({"flash_attn": "auto"}, True),
        ({"flash_attn": "maybe"}, False),
        ({"ctx": "auto", "gpu_layers": "all", "tensor_split": "auto"}, True),
        ({"ctx": "max"}, False),
        ({"gpu_layers": -1}, False),
        ({"ctx_size": 4096}, False),
        ({"kv_cache_memory_bytes": "2GiB"}, True),
    ],
)
def test_settings_and_auto(validator, settings, valid):
    deployment = {"name": "d", "engine": "llama-server", "model": "m", "settings": settings}
    assert (not _errors(validator, deployment)) == valid


@pytest.mark.parametrize(
    ("margin", "valid"),
    [
        ("25%", True),
        (0.25, True),
        ("1GiB", True),
        ({"fraction": 0.1}, True),
        ("lots", False),
    ],
)
def test_margins(validator, margin, valid):
    deployment = {"name": "d", "engine": "ollama", "model": "m", "lint": {"margin": margin}}
    assert (not _errors(validator, deployment)) == valid


def test_a_file_vramc_cannot_place_is_refused(validator):
    # only keys every kind has: vramc cannot tell the kind (VR004), and no single branch matches
    assert _errors(validator, {"name": "x", "description": "y"})
    assert _errors(validator, {"kind": "hardware", "engine": "ollama", "name": "x"})
