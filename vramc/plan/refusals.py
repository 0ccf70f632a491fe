"""The one table from an engine's refusal to a rule code.

A memory model says why an engine would stop at start as a `Refusal(kind, message)`
(vramc.memory.usage) and names no rule; here each kind gets the rule that documents it, the
setting its diagnostic points at where the profile sets it, and the code `vramc plan` shows for it
(`errors[].code` in `--format json`, a public interface: vLLM's refusals have always shown their
rule's code, llama.cpp's their own kind). A kind this table does not know is VR320, the engine
refusing in words vramc has no rule for.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RefusalRule:
    code: str  # the rule that documents it (`vramc explain CODE`)
    setting: str  # the setting it is about
    plan_shows_code: bool  # `vramc plan` shows the rule's code (else the kind)


REFUSALS: dict[str, RefusalRule] = {
    # llama.cpp (vramc.memory.llama), in llama.cpp's words
    "llama-split-row": RefusalRule("VR311", "split_mode", False),
    "llama-quantized-v-needs-fa": RefusalRule("VR305", "cache_type_v", False),
    "llama-kv-types-differ": RefusalRule("VR321", "cache_type_v", False),
    "llama-kv-type-block": RefusalRule("VR321", "cache_type_v", False),
    "llama-override-device": RefusalRule("VR322", "override_tensor", False),
    # vLLM (vramc.memory.vllm)
    "vllm-start-check": RefusalRule("VR330", "gpu_memory_utilization", True),
    "vllm-kv-short-of-max-model-len": RefusalRule("VR331", "max_model_len", True),
    "vllm-no-kv-memory": RefusalRule("VR332", "gpu_memory_utilization", True),
    "vllm-scheduler-invalid": RefusalRule("VR333", "max_num_batched_tokens", True),
    "vllm-max-model-len-over-derived": RefusalRule("VR334", "max_model_len", True),
    "vllm-colocated-oversubscribed": RefusalRule("VR335", "gpu_memory_utilization", True),
    "vllm-colocated-start-fails": RefusalRule("VR336", "gpu_memory_utilization", True),
    "vllm-parallel-invalid": RefusalRule("VR337", "tensor_parallel_size", True),
    # vLLM across GPUs and machines (issue 17: vramc.memory.vllm, rules in vramc.lint.rules.vllm_nodes)
    "vllm-pp-stage-empty": RefusalRule("VR370", "pipeline_parallel_size", True),
    "vllm-pp-partition-invalid": RefusalRule("VR371", "pipeline_parallel_size", True),
    "vllm-world-size-invalid": RefusalRule("VR372", "pipeline_parallel_size", True),
    "vllm-node-gpus-invalid": RefusalRule("VR373", "tensor_parallel_size", True),
}
UNKNOWN = "VR320"


def rule_code(kind: str) -> str:
    """The rule code of a refusal of this kind."""
    r = REFUSALS.get(kind)
    return r.code if r is not None else UNKNOWN


def shown_code(kind: str) -> str:
    """What `vramc plan` (text and JSON) shows as the code of a refusal of this kind."""
    r = REFUSALS.get(kind)
    return r.code if r is not None and r.plan_shows_code else kind


def setting(kind: str) -> str | None:
    """The setting a refusal of this kind is about, or None."""
    r = REFUSALS.get(kind)
    return r.setting if r is not None else None
