"""`vramc check` ends without Python's teardown (vramc.cli.NO_TEARDOWN): what it prints, writes
and exits with must be exactly what the ordinary way out gives."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# the command layer run without the console script's quick exit
ORDINARY = "import sys\nfrom vramc.cli.commands import main\nsys.argv[0] = 'vramc'\nmain()"

CLEAN = """\
kind: hardware
name: box
gpus: [{name: RTX 4090, vram: 24GiB}]
host_ram: 64GiB
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """Profiles whose report (one VR001 line each) is larger than any output buffer."""
    root = tmp_path_factory.mktemp("quick-exit")
    (root / "bad").mkdir()
    for i in range(600):
        (root / "bad" / f"broken-{i:03}.yaml").write_text(f"name: broken{i}\nsettings:\n  tensor_split: [16, 12\n")
    (root / "clean.yaml").write_text(CLEAN)
    return root


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    # PYTHONUNBUFFERED would write every line at once: a lost buffer must show
    env = {k: v for k, v in os.environ.items() if k not in ("VRAMC_CACHE", "PYTHONUNBUFFERED")}
    env["VRAMC_NO_CACHE"] = "1"
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "args",
    [
        ["check", "bad"],  # exit 1, more output than any buffer holds
        ["check", "--format", "json", "bad"],
        ["check", "clean.yaml"],
        ["check", "bad/broken-000.yaml"],  # one line: still in the buffer at exit
        ["check", "--format", "nope", "bad"],  # a usage error: exit 2
        ["check", "--help"],
    ],
)
def test_quick_exit_prints_and_exits_as_the_ordinary_way(project, args):
    quick = _run([sys.executable, "-m", "vramc", *args], project)
    ordinary = _run([sys.executable, "-c", ORDINARY, *args], project)
    # click names the program as it was started
    said = quick.stdout.replace("python -m vramc", "vramc")
    assert (quick.returncode, said, quick.stderr) == (ordinary.returncode, ordinary.stdout, ordinary.stderr)
    assert quick.returncode in (0, 1, 2), quick.stderr
    if args == ["check", "bad"]:
        assert quick.returncode == 1 and quick.stdout.count(": VR001 error: ") == 600
        assert len(quick.stdout) > 65536 and quick.stderr == "600 errors in 600 files\n"


def test_quick_exit_writes_the_output_file(project, tmp_path):
    out = tmp_path / "report.json"
    quick = _run([sys.executable, "-m", "vramc", "check", "-f", "json", "-o", str(out), "bad"], project)
    assert quick.returncode == 1 and quick.stdout == ""
    ordinary = _run([sys.executable, "-c", ORDINARY, "check", "-f", "json", "bad"], project)
    assert out.read_text() == ordinary.stdout and out.read_text().count('"VR001"') == 600


def test_check_loads_no_pydantic_plugin_unless_the_user_asks(project, tmp_path):
    """vramc sets PYDANTIC_DISABLE_PLUGINS (vramc/__init__.py: pydantic otherwise reads every
    installed package's entry points at its first model); a value the user set wins."""
    site = tmp_path / "site"
    (site / "markerplugin-0.1.dist-info").mkdir(parents=True)
    (site / "markerplugin-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: markerplugin\nVersion: 0.1\n"
    )
    (site / "markerplugin-0.1.dist-info" / "entry_points.txt").write_text("[pydantic]\nmarker = markerplugin:plugin\n")
    marker = tmp_path / "loaded"
    (site / "markerplugin.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n"
        "class Plugin:\n"
        "    def new_schema_validator(self, *args, **kwargs):\n"
        "        return None, None, None\n"
        "plugin = Plugin()\n"
    )

    def check(**env: str) -> subprocess.CompletedProcess:
        base = {k: v for k, v in os.environ.items() if k not in ("VRAMC_CACHE", "PYDANTIC_DISABLE_PLUGINS")}
        base.update(VRAMC_NO_CACHE="1", PYTHONPATH=os.pathsep.join([str(ROOT), str(site)]), **env)
        return subprocess.run(
            [sys.executable, "-m", "vramc", "check", "clean.yaml"],
            cwd=project,
            env=base,
            capture_output=True,
            text=True,
        )

    r = check()
    assert r.returncode == 0, r.stderr
    assert not marker.exists()
    r = check(PYDANTIC_DISABLE_PLUGINS="")  # the user's choice: plugins on
    assert r.returncode == 0, r.stderr
    assert marker.exists()


def _imports(argv: list[str], cwd: Path) -> str:
    """What `python -X importtime ARGV` imported (its stderr)."""
    env = {k: v for k, v in os.environ.items() if k not in ("VRAMC_CACHE", "PYDANTIC_DISABLE_PLUGINS")}
    env.update(VRAMC_NO_CACHE="1", PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-X", "importtime", *argv], cwd=cwd, env=env, capture_output=True, text=True)
    assert r.returncode in (0, 1), r.stderr[-2000:]
    return r.stderr


def test_check_imports_no_package_metadata_reader(project):
    """pydantic's plugin loader would import importlib.metadata (email, zipfile, csv) to find
    plugins that are turned off: vramc.cli stands in a loader that finds none."""
    said = _imports(["-m", "vramc", "check", "clean.yaml"], project)
    assert "| vramc.load.schema" in said  # the models were built
    assert "importlib.metadata" not in said and "| email" not in said
    # the same models built by any other command import pydantic's own loader
    said = _imports(["-c", "import vramc.load.schema"], project)
    assert "importlib.metadata" in said


def test_the_stand_in_plugin_loader_hands_other_names_to_pydantics(tmp_path):
    code = (
        "import sys, vramc.cli\n"
        "vramc.cli._no_plugin_discovery()\n"
        "from pydantic.plugin._loader import get_plugins\n"
        "assert get_plugins() == () and 'importlib.metadata' not in sys.modules\n"
        "from pydantic.plugin._loader import PYDANTIC_ENTRY_POINT_GROUP\n"
        "assert PYDANTIC_ENTRY_POINT_GROUP == 'pydantic' and 'importlib.metadata' in sys.modules\n"
        "print('ok')\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYDANTIC_DISABLE_PLUGINS="__all__")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout == "ok\n", r.stderr
