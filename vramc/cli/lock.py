"""`vramc lock`: a model profile's lock derived from config.json (vramc.dev.synth.from_config)."""

from __future__ import annotations

import sys
from pathlib import Path

from vramc.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE


def cli_lock(config: Path, quant: str, *, write: Path | None, name: str | None) -> int:
    """`vramc lock --config config.json --quant Q4_K_M [--write PROFILE]`."""
    import shlex

    from vramc.dev.synth.from_config import ConfigError, load_config, meta_from_config
    from vramc.dev.synth.from_config import model_name as config_model_name
    from vramc.model.analyze import (
        build_report,
        profile_yaml,
        render_text,
    )

    try:
        cfg = load_config(config)
        model_name = name or config_model_name(cfg, config, quant)
        meta = meta_from_config(cfg, quant, name=model_name)
    except ConfigError as e:
        sys.stderr.write(f"vramc lock: {e}\n")
        return EXIT_FAILED
    source = (
        f"derived from {Path(config).name} as convert_hf_to_gguf.py + llama-quantize "
        f"{quant.upper()} would write it (no GGUF read)"
    )
    report = build_report(meta, f"{config} as {quant.upper()}")
    # no file: its size is the tensor data (the header, a few MB of vocabulary, is unknown here)
    report["file_size"] = meta.total_bytes
    report["header_sha256"] = "- (derived: no file)"
    sys.stdout.write(render_text(report))
    if write is not None:
        from vramc.load.yamledit import EditRefused, write_new

        command = [
            "vramc",
            "lock",
            "--config",
            str(config),
            "--quant",
            quant,
            "--write",
            str(write),
        ]
        command += ["--name", name] if name else []
        text = profile_yaml(
            meta,
            gguf=None,
            name=model_name,
            source=source,
            command=" ".join(shlex.quote(a) for a in command),
        )
        try:
            write_new(write, text)
        except EditRefused as e:
            sys.stderr.write(f"vramc lock: {e}\n")
            return EXIT_USAGE
        except OSError as e:
            sys.stderr.write(f"{write}: cannot write: {e.strerror or e}; nothing was written\n")
            return EXIT_FAILED
        sys.stderr.write(f"wrote {write}\n")
    return EXIT_OK
