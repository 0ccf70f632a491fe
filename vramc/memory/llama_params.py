"""llama.cpp's own parameters, after each engine's defaults and semantics have been applied.

Engines differ (llama-server's -c is the total across slots, Ollama multiplies num_ctx by
num_parallel, llama-cpp-python defaults to n_ctx 512 and no GPU layers); `engines.py` turns a
profile's settings into one `LlamaParams`, and the llama.cpp memory model only ever sees this.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class LlamaParams:
    n_ctx: int  # context as llama_context_params.n_ctx: total over all sequences; 0 = trained
    n_seq_max: int = 1  # slots (-np)
    kv_unified: bool = False  # one KV stream shared by all slots
    n_batch: int = 2048
    n_ubatch: int = 512
    n_gpu_layers: int = -1  # llama_model_params.n_gpu_layers; -1 = all (n_layer + 1)
    split_mode: str = "layer"  # none | layer | row
    tensor_split: tuple[float, ...] | None = None  # None or all zero: by free memory
    main_gpu: int = 0
    flash_attn: str = "auto"  # on | off | auto
    type_k: str = "f16"
    type_v: str = "f16"
    offload_kqv: bool = True
    swa_full: bool = False
    n_outputs_max: int | None = None  # None: n_batch (llama_context default)
    overrides: tuple[tuple[str, str], ...] = field(default=())  # (-ot regex, "CPU" or "CUDA1")
    op_offload: bool = True  # --no-op-offload: CUDA runs host-weight ops of large batches itself

    def gpu_layers_for(self, n_layer: int) -> int:
        """Offloaded layers counting the output layer, as load_tensors computes them."""
        n = self.n_gpu_layers if self.n_gpu_layers >= 0 else n_layer + 1
        return min(n, n_layer + 1)
