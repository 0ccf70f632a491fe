"""Ollama artifacts: the server environment names only variables Ollama reads (the allow-list in
vramc.engines, from Ollama's envconfig), the env file and the drop-in say the same, and the
Modelfile reads back, through a port of Ollama's own parser (build_support.parse_modelfile), as
the planned parameters."""

from __future__ import annotations

from build_support import FIXTURE, build, copy_fixture, parse_modelfile, read_env_file, unit_environment
from vramc.engines import OLLAMA_ENV, OLLAMA_SOURCE

OUT = FIXTURE / "out"


def test_server_environment_is_only_variables_ollama_reads():
    envs = sorted(OUT.rglob("ollama.env"))
    assert envs
    for path in envs:
        env = read_env_file(path)
        assert set(env) <= OLLAMA_ENV, f"{path}: not in {OLLAMA_SOURCE}: {set(env) - OLLAMA_ENV}"
        assert env == unit_environment((path.parent / "ollama.service.d" / "override.conf").read_text())
    base = read_env_file(OUT / "mistral-ollama" / "ollama.env")
    assert base["OLLAMA_NUM_PARALLEL"] == "2" and base["OLLAMA_KV_CACHE_TYPE"] == "q8_0"
    assert base["OLLAMA_FLASH_ATTENTION"] == "1" and base["OLLAMA_HOST"] == "127.0.0.1:11434"
    assert base["OLLAMA_ORIGINS"] == "http://localhost:*" and base["OLLAMA_KEEP_ALIVE"] == "30m"
    assert base["CUDA_VISIBLE_DEVICES"].startswith("GPU-")


def test_modelfile_carries_the_per_model_parameters():
    from vramc.lint.check import run_check

    plans = {p.dep.label: p for p in run_check([FIXTURE / "profiles" / "ollama.yaml"]).plans}
    gguf = FIXTURE / "models" / "mistral-7b-instruct-v0.3-Q4_K_M.gguf"
    for label in ("mistral-ollama", "mistral-ollama@one-slot"):
        path = OUT / label.replace("@", "/@") / "Modelfile"
        commands = parse_modelfile(path.read_text())
        assert (path.parent / dict(commands)["model"]).resolve() == gguf.resolve()
        p = plans[label].params
        params = dict(commands[1:])
        assert params["num_ctx"] == str(p.n_ctx // p.n_seq_max)  # per slot
        assert params["num_gpu"] == "33" and params["num_batch"] == str(p.n_batch)
        assert params["temperature"] == "0.2"  # from the project's own template


def test_made_up_variables_block_the_build_and_are_never_written(tmp_path, monkeypatch, capsys):
    project = copy_fixture(tmp_path / "p")
    profile = project / "profiles" / "ollama.yaml"
    profile.write_text(profile.read_text().replace("env:\n", "env:\n  OLLAMA_GPU_LAYERS: 40\n"))
    monkeypatch.chdir(project)
    assert build(["profiles/ollama.yaml"]) == 1  # VR401: not an Ollama variable
    assert "not built: mistral-ollama fails check (VR401)" in capsys.readouterr().err
    assert not (project / "out").exists()
    assert build(["profiles/ollama.yaml"], force=True) == 0
    err = capsys.readouterr().err
    assert "--force: BUILDING mistral-ollama ALTHOUGH CHECK FAILS (VR401)" in err
    assert "env OLLAMA_GPU_LAYERS not written" in err
    assert "OLLAMA_GPU_LAYERS" not in (project / "out" / "mistral-ollama" / "ollama.env").read_text()


def test_every_ollama_choice_the_plan_assumes_is_written():
    """Each decision Ollama would make itself and the plan relies on (vramc.plan.ollama_sched) is pinned
    in the artifacts as its `pinned` says: a PARAMETER in the Modelfile, a variable in the env."""
    from build_support import ROOT
    from vramc.lint.check import run_check

    seen = 0
    for project, profile in ((FIXTURE, FIXTURE / "profiles" / "ollama.yaml"), (ROOT, ROOT / "profiles" / "16gb.yaml")):
        for plan in run_check([profile]).plans:
            folder = project / "out" / plan.dep.label.replace("@", "/@")
            params = dict(parse_modelfile((folder / "Modelfile").read_text())[1:])
            env = read_env_file(folder / "ollama.env")
            assert params["num_batch"] == str(plan.params.n_batch) == str(plan.params.n_ubatch)
            for key, choice in plan.engine_choices.items():
                for pin in (choice.pinned or "").split(", "):
                    if pin.startswith("PARAMETER "):
                        _, name, value = pin.split()
                        assert params[name] == value, (plan.dep.label, key, pin)
                        seen += 1
                    elif "=" in pin:
                        name, value = pin.split("=")
                        assert env[name] == value, (plan.dep.label, key, pin)
                        seen += 1
    assert seen >= 5 * 3  # batch, ubatch, num_gpu, LLAMA_ARG_FIT for each of 5 plans, at least


def test_an_explicit_mmap_is_written_as_use_mmap_true_and_only_then(tmp_path, monkeypatch):
    """`load_mode: mmap` wrote no use_mmap, and Ollama turns mmap off itself when none is set (no
    GPU layers, host memory pressure: server/sched.go disableMmapDefaultReason,
    disableMmapForHostPressure); unset, nothing is written, as before."""
    from vramc.lint.check import run_check

    project = copy_fixture(tmp_path / "p")
    profile = project / "profiles" / "ollama.yaml"
    profile.write_text(
        profile.read_text().replace(
            "  one-slot:\n",
            "  mapped:\n    settings: {load_mode: mmap}\n  unmapped:\n    settings: {load_mode: none}\n  one-slot:\n",
        )
    )
    monkeypatch.chdir(project)
    assert build(["profiles/ollama.yaml"]) == 0
    want = {"mistral-ollama@mapped": "true", "mistral-ollama@unmapped": "false", "mistral-ollama": None}
    want["mistral-ollama@one-slot"] = None
    plans = {p.dep.label: p for p in run_check([profile]).plans}
    for label, value in want.items():
        params = dict(parse_modelfile((project / "out" / label.replace("@", "/@") / "Modelfile").read_text())[1:])
        assert params.get("use_mmap") == value, (label, params)
        mmap = plans[label].engine_choices["mmap"]
        if value == "true":
            assert mmap.value is True and mmap.pinned == "PARAMETER use_mmap true"
