"""Write the locked model profiles that the shipped example profiles use.

The real GGUF files are tens of GB, so each lock is what `vramc analyze` reads from a sparse GGUF
that vramc.dev.synth writes with the published shape and llama.cpp's own quantisation rules: the same
tensor table a real file has. The lock keeps no file fingerprint (no header of ours would match
the real download's): lock a real file with `vramc analyze FILE --write profiles/models/NAME.yaml`
to get one with a fingerprint.

    python scripts/lock_shipped_models.py          # rewrite profiles/models/<these>.yaml
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from vramc.dev.synth.shapes import get_shape
from vramc.dev.synth.writer import write_sparse_gguf
from vramc.load.yamledit import write_new
from vramc.model.analyze import profile_yaml
from vramc.model.gguf import read_gguf

# profile name -> (catalog shape, llama.cpp file type, the file name people download)
SHIPPED = {
    "llama-3.1-8b-instruct-q8_0": ("llama-3.1-8b-instruct", "Q8_0", "models/Meta-Llama-3.1-8B-Instruct-Q8_0.gguf"),
    "nemotron-super-49b-v1.5-q8_0": (
        "llama-3.3-nemotron-super-49b-v1.5",
        "Q8_0",
        "models/nvidia_Llama-3_3-Nemotron-Super-49B-v1_5-Q8_0-00001-of-00002.gguf",
    ),
    "deepseek-r1-distill-qwen-14b-q4_k_m": (
        "deepseek-r1-distill-qwen-14b",
        "Q4_K_M",
        "models/DeepSeek-R1-Distill-Qwen-14B-Q4_K_M.gguf",
    ),
    "deepseek-r1-distill-qwen-14b-q5_k_m": (
        "deepseek-r1-distill-qwen-14b",
        "Q5_K_M",
        "models/DeepSeek-R1-Distill-Qwen-14B-Q5_K_M.gguf",
    ),
}
COMMAND = "python scripts/lock_shipped_models.py"


def lock_text(name: str) -> str:
    shape_name, ftype, gguf = SHIPPED[name]
    shape = get_shape(shape_name)
    with tempfile.TemporaryDirectory() as tmp:
        meta = read_gguf(write_sparse_gguf(Path(tmp) / Path(gguf).name, shape, ftype))
    text = profile_yaml(meta, gguf=gguf, name=name, command=COMMAND)
    # no fingerprint: see the module docstring
    text = "".join(line for line in text.splitlines(keepends=True) if not line.startswith("  file: "))
    source = (
        f"{shape.source}; tensor table as llama.cpp's converter and {ftype} quantisation "
        f"rules produce it (vramc.dev.synth), no file fingerprint: lock the real file with "
        f"`vramc analyze {gguf} --write profiles/models/{name}.yaml`"
    )
    return text.replace(f"source: vramc analyze of {Path(gguf).name}\n", f"source: {_quote(source)}\n")


def _quote(text: str) -> str:
    import yaml

    return yaml.safe_dump(text, width=10**9, default_style='"').strip()


def main() -> int:
    root = Path(__file__).resolve().parent.parent / "profiles" / "models"
    for name in SHIPPED:
        write_new(root / f"{name}.yaml", lock_text(name))
        print(f"wrote profiles/models/{name}.yaml")
    return 0


if __name__ == "__main__":
    sys.exit(main())
