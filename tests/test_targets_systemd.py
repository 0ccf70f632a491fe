"""systemd units and the Ollama drop-in pass `systemd-analyze verify`, and say what the plan says.

verify runs against a temporary root (--root) holding the system's unit files and stand-in
programs: it checks that ExecStart's program exists and is executable, and the engines are not
installed on a test machine. Any complaint (an unknown key is only a warning) fails the test.
"""

from __future__ import annotations

import re
import shutil

import pytest

from build_support import FIXTURE, args_file_lines, execstart_argv, systemd_root, verify_unit

OUT = FIXTURE / "out"
UNITS = sorted(OUT.rglob("vramc-*.service"))
DROPINS = sorted(OUT.rglob("ollama.service.d/override.conf"))
needs_systemd = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return systemd_root(tmp_path_factory.mktemp("systemd-root"))


@needs_systemd
@pytest.mark.parametrize("unit", UNITS, ids=lambda p: str(p.relative_to(OUT)))
def test_unit_passes_systemd_analyze_verify(root, unit):
    assert verify_unit(root, unit.name, unit.read_text()) == ""


@needs_systemd
@pytest.mark.parametrize("dropin", DROPINS, ids=lambda p: str(p.relative_to(OUT)))
def test_ollama_dropin_passes_systemd_analyze_verify(root, dropin):
    assert verify_unit(root, "ollama.service", dropin.read_text(), dropin="override.conf") == ""


def test_verify_reports_what_it_should(root):
    """The check is not vacuous: a misspelt key and a missing program are reported."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("no systemd-analyze")
    text = UNITS[0].read_text()
    assert "Unknown key" in verify_unit(root, UNITS[0].name, text.replace("Restart=", "Restrat="))
    missing = re.sub(r"^ExecStart=\S+", "ExecStart=no-such-engine", text, flags=re.M)
    assert "no-such-engine" in verify_unit(root, UNITS[0].name, missing)


def test_units_start_what_the_args_files_say():
    for unit in UNITS:
        argv = execstart_argv(unit.read_text())
        if argv[:2] == ["sh", "-c"]:  # a vLLM Ray head (issue 17): `ray start --head ...`, then exec the rest
            assert argv[2].startswith("ray start --head ") and argv[2].endswith(' && exec "$0" "$@"'), unit
            argv = argv[3:]
        for args_file, program in (("llama-server.args", ["llama-server"]), ("vllm.args", ["vllm", "serve"])):
            if (unit.parent / args_file).is_file():
                assert argv == program + args_file_lines(unit.parent / args_file), unit


def test_units_order_after_the_network_lock_memory_and_keep_cuda_devices():
    for unit in UNITS:
        text = unit.read_text()
        assert "Wants=network-online.target\nAfter=network-online.target\n" in text
        assert "Restart=on-failure" in text and "PrivateDevices" not in text.replace("no PrivateDevices=", "")
        mlock = "--load-mode mmap+mlock" in text or "--load-mode mlock" in text
        assert ("LimitMEMLOCK=infinity" in text) == mlock, unit
    split = (OUT / "mistral-split" / "vramc-mistral-split.service").read_text()
    # two-gpus.yaml orders by free memory: the 3090 (index 1) before the display 3060 (index 0)
    assert 'Environment="CUDA_VISIBLE_DEVICES=1,0"' in split and "LimitMEMLOCK=infinity" in split
    stable = (OUT / "mistral-split" / "@stable" / "vramc-mistral-split.service").read_text()
    assert "LimitMEMLOCK" not in stable  # the variant loads with mmap only
