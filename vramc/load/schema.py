"""The profile format (a public interface): pydantic models for hardware, model and deployment.

Only input validation lives here. Values are normalised on the way in (sizes to bytes, `on`/`off`
to strings) so that the planner never sees two spellings of the same thing. Change only compatibly.
"""

# No `from __future__ import annotations` here: pydantic would parse every annotation string
# when the models are built (`vramc check` pays it, issue 12). Define a class before a field names it.
import re
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    ValidationInfo,
    field_validator,
)

from vramc.engines import ENGINES
from vramc.units import parse_fraction, parse_size

# pydantic's `pattern` runs Rust's regex, where `$` is the end of the text; Python's re.match lets
# `$` match before a final newline ("ok\n"), so Python code checks names with `valid_name`.
NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
CODE_PATTERN = r"VR\d{3}"


def valid_name(name: str) -> bool:
    return re.fullmatch(NAME_RE, name) is not None


# Linux's NAME_MAX and PATH_MAX (macOS: 255 and 1024): longer names cannot be opened at all.
NAME_MAX, PATH_MAX = 255, 4095


def path_problem(text: str) -> str | None:
    """Why `text` cannot name a file on any system vramc runs on, or None."""
    if "\0" in text:
        return "a path cannot contain a NUL character (\\0)"
    longest = max((len(part.encode("utf-8", "surrogatepass")) for part in re.split(r"[/\\]", text)), default=0)
    if longest > NAME_MAX:
        return f"a path component is {longest} bytes long; file systems allow at most {NAME_MAX}"
    if len(text.encode("utf-8", "surrogatepass")) > PATH_MAX:
        return f"the path is longer than {PATH_MAX} bytes"
    return None


def _path(v: str) -> str:
    problem = path_problem(v)
    if problem:
        raise ValueError(problem)
    return v


_OT_FORM = (
    "override_tensor takes llama.cpp's -ot form PATTERN=DEVICE, PATTERN a regular expression searched in tensor names"
)


def _override(spec: str) -> str:
    # llama.cpp's -ot takes PATTERN=BUFFER, split at the first '=' (common/arg.cpp
    # parse_tensor_buffer_overrides: no '=' is "invalid value", and everything after the first one
    # is the buffer type's name), PATTERN a regular expression searched in tensor names
    # (std::regex_search); vramc reads it with Python's re, which refuses what std::regex refuses
    pattern, eq, device = spec.partition("=")
    if not eq:
        raise ValueError(
            f"{spec!r} names no device: {_OT_FORM}, e.g. 'blk\\.[0-9]+\\.ffn_.*_exps=CPU' "
            "(llama-server refuses it: invalid value)"
        )
    if not device or "=" in device:
        raise ValueError(
            f"the device {device!r} is not a buffer type: {_OT_FORM}, split at the first '=' "
            "(so PATTERN cannot hold one); e.g. CPU or CUDA0"
        )
    try:
        re.compile(pattern)
    except re.error as e:
        raise ValueError(
            f"{pattern!r} is not a regular expression ({e.msg} at position {e.pos}): {_OT_FORM}; "
            "write `.*` for anything (not `*`), `\\.` for a dot, e.g. "
            "'blk\\.[0-9]+\\.ffn_.*_exps=CPU'"
        ) from None
    except (OverflowError, RecursionError):  # x{99999999999}, or nesting past the stack
        raise ValueError(
            f"{pattern[:60]!r} is too large a regular expression for a tensor name pattern: {_OT_FORM}"
        ) from None
    return spec


def _finite_tree(v: Any) -> Any:
    """Free-form maps (a lock's hparams, config.json's rope_scaling) hold no NaN or infinity."""
    import math

    stack = [v]
    while stack:
        x = stack.pop()
        if isinstance(x, float) and not math.isfinite(x):
            raise ValueError(f"numbers must be finite, not {x}")
        if isinstance(x, dict):
            stack.extend(x.values())
        elif isinstance(x, list):
            stack.extend(x)
    return v


def _variant_name(name: str) -> str:
    # a variant's name becomes a directory (out/NAME@VARIANT) and part of `vramc run NAME@VARIANT`
    if not valid_name(name):
        raise ValueError(
            f"variant name {name!r} must be letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


PathStr = Annotated[str, AfterValidator(_path)]
# Bounds keep absurd values from becoming absurd work: no engine takes more tokens than this.
MAX_TOKENS = 1 << 24

# What a size may be written as, for the JSON Schema (vramc.load.json_schema) that editors check
# profiles with: units.parse_size's spellings (a bare number is MiB; units case-insensitive).
SIZE_PATTERN = r"^\s*[0-9]+(\.[0-9]+)?\s*([Bb]|[KkMmGgTt]([Ii]?[Bb])?)?\s*$"
SizeInput = Union[Annotated[float, Field(ge=0)], Annotated[str, Field(pattern=SIZE_PATTERN)]]
Bytes = Annotated[int, BeforeValidator(parse_size, json_schema_input_type=SizeInput)]


def _onoff(v: Any) -> Any:
    # YAML 1.1 reads bare on/off/yes/no as booleans; accept both spellings.
    if v is True:
        return "on"
    if v is False:
        return "off"
    return v


def _margin(v: Any) -> Any:
    # `25%` / 0.25 is a fraction of the GPU; `1GiB` / `512MiB` is absolute.
    if isinstance(v, (dict, BaseModel)):
        return v
    if isinstance(v, str) and v.strip().endswith("%"):
        return {"fraction": parse_fraction(v)}
    if isinstance(v, float) and 0 <= v < 1:
        return {"fraction": v}
    if isinstance(v, str):  # `--margin 0.1` and `margin: "0.1"` are the fraction `margin: 0.1` is
        try:
            f = float(v.strip())
        except ValueError:
            pass
        else:
            if 0 <= f < 1:
                return {"fraction": f}
    return {"bytes": parse_size(v)}


OnOffAuto = Annotated[
    Literal["on", "off", "auto"],
    BeforeValidator(_onoff, json_schema_input_type=Union[Literal["on", "off", "auto"], bool]),
]
CacheType = Literal["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1"]
if TYPE_CHECKING:
    Engine = str  # the registry's names exist only when it is imported
else:
    Engine = Literal[tuple(ENGINES)]  # the registry's names, in its order


def _is_number(annotation: Any, metadata: list[Any]) -> bool:
    """Whether a field takes a number and no boolean (pydantic's lax mode would read true as 1);
    on/off fields read YAML booleans themselves. Annotated metadata comes both as
    FieldInfo.metadata and, nested in an Optional, as type arguments."""
    if annotation is bool or any(getattr(m, "func", None) is _onoff for m in [annotation, *metadata]):
        return False
    if annotation in (int, float):
        return True
    args = get_args(annotation)
    return any(_is_number(a, []) for a in args) and not any(a is bool for a in args)


class Strict(BaseModel):
    # allow_inf_nan: a NaN or infinity in any float field would reach the planner's arithmetic and
    # the plan JSON (which has no spelling for them)
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, v: Any, info: ValidationInfo) -> Any:
        # pydantic's lax mode reads YAML's true/false as 1/0 in a number field: `gpu_layers: false`
        # would silently plan 0 layers. Only fields that take a boolean (or on/off) accept one.
        if isinstance(v, bool) and info.field_name is not None:
            field = cls.model_fields[info.field_name]
            if _is_number(field.annotation, field.metadata):
                raise ValueError(f"takes a number, not a boolean; got {'true' if v else 'false'}")
        return v


class Margin(Strict):
    fraction: float | None = Field(default=None, ge=0, le=1)
    bytes: int | None = Field(default=None, ge=0)

    def of(self, capacity: int) -> int:
        return int(self.fraction * capacity) if self.fraction is not None else int(self.bytes or 0)

    def describe(self) -> str:
        from vramc.units import fmt_size

        return f"{self.fraction:.0%}" if self.fraction is not None else fmt_size(self.bytes or 0)


PERCENT_PATTERN = r"^\s*[0-9]+(\.[0-9]+)?\s*%\s*$"
MarginSpec = Annotated[
    Margin,
    BeforeValidator(
        _margin, json_schema_input_type=Union[Margin, Annotated[str, Field(pattern=PERCENT_PATTERN)], SizeInput]
    ),
]


class Tenant(Strict):
    """Another process that holds memory on the same GPU (a desktop, a torch app, another server)."""

    name: str
    vram: Bytes


class GPU(Strict):
    name: str
    vram: Bytes
    reserve: Bytes | None = None  # kept free on purpose; default depends on `display`
    overhead: Bytes | None = None  # CUDA context + cuBLAS + driver; default: hardware.overhead
    display: bool = False  # drives a monitor: the desktop holds memory there
    tenants: list[Tenant] = []
    free: Bytes | None = None  # free VRAM as measured by `vramc detect`, for free_desc ordering
    index: int | None = Field(default=None, ge=0)
    uuid: str | None = None


# A host as another machine reaches it: a DNS name or an IPv4 address. It is written into
# `--rpc HOST:PORT` (ggml-rpc.cpp parse_endpoint splits at the first ':', so no IPv6), into shell
# scripts and into systemd units: letters, digits, '.', '-' and '_' only, nothing a shell reads.
ADDRESS_RE = r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,251}[A-Za-z0-9])?$"
# a llama.cpp build (b7400, a commit such as 0c1e570, 0.3.36): compared for equality only
BUILD_RE = r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$"
# NCCL_SOCKET_IFNAME's form: interface names (IFNAMSIZ: 15 characters), comma-separated, an
# optional leading '^' (exclude) or '=' (exact match)
INTERFACE_RE = r"^[=^]?[A-Za-z0-9][A-Za-z0-9._:@-]{0,14}(,[A-Za-z0-9][A-Za-z0-9._:@-]{0,14})*$"


def _address(v: str) -> str:
    if ":" in v:
        raise ValueError(
            f"address {v!r} holds a ':': write the host name or IPv4 address alone (the port is "
            "the deployment's `port:`; llama.cpp's --rpc HOST:PORT cannot take an IPv6 address)"
        )
    if re.fullmatch(ADDRESS_RE, v) is None:
        raise ValueError(
            f"address {v!r} is not a host name or IPv4 address: letters, digits, '.', '-' and '_' "
            "only (no spaces or shell characters), e.g. 192.168.1.12 or box2.lan"
        )
    return v


def _build(v: str) -> str:
    if re.fullmatch(BUILD_RE, v) is None:
        raise ValueError(f"llama_cpp {v!r} is not a build name: letters, digits, '.', '_', '+' and '-' (e.g. b7400)")
    return v


def _interface(v: str) -> str:
    if re.fullmatch(INTERFACE_RE, v) is None:
        raise ValueError(
            f"interface {v!r} is not a network interface name (at most 15 letters, digits, '.', "
            "'_', ':', '@' or '-'; several separated by ','), e.g. eth0"
        )
    return v


Address = Annotated[str, AfterValidator(_address)]
Build = Annotated[str, AfterValidator(_build)]


class Network(Strict):
    """How the machines of a hardware profile reach each other."""

    # rpc-server has no authentication (tools/rpc/README.md: never on an open network): binding it
    # anywhere but loopback needs this acknowledgement (VR410)
    trusted: bool = False
    interface: Annotated[str, AfterValidator(_interface)] | None = None  # NCCL/GLOO_SOCKET_IFNAME


class Host(Strict):
    """Another machine of a hardware profile: a llama.cpp rpc-server worker or a vLLM node."""

    name: str = Field(pattern=NAME_RE)
    description: str | None = None
    address: Address
    gpus: list[GPU] = []  # none: the host serves its CPU backend
    host_ram: Bytes | None = None
    overhead: Bytes | None = None  # default per-GPU overhead for this host's GPUs
    llama_cpp: Build | None = None


class Hardware(Strict):
    kind: Literal["hardware"] | None = None
    name: str | None = None
    description: str | None = None
    gpus: list[GPU] = []
    host_ram: Bytes | None = None
    overhead: Bytes | None = None  # default per-GPU overhead for every GPU here
    device_order: Literal["index", "free_desc", "total_desc"] = "index"
    # several machines (issue 17): this one's address and llama.cpp build, the network, the others
    address: Address | None = None
    llama_cpp: Build | None = None
    network: Network | None = None
    hosts: list[Host] = []


class FileLock(Strict):
    size: int = Field(ge=0)
    header_sha256: str
    splits: int = Field(default=1, ge=1)


class GGUFLock(Strict):
    """Everything vramc needs from a GGUF header, so a profile can be checked without the file."""

    file: FileLock | None = None
    architecture: str
    name: str | None = None
    file_type: str | None = None
    hparams: Annotated[dict[str, Any], AfterValidator(_finite_tree)] = {}
    vocab_size: int = Field(ge=0)
    tensors: dict[str, list[Any]] = {}


class HFConfig(Strict):
    """The subset of a Hugging Face config.json that sizes a model for vLLM."""

    architecture: str | None = None
    num_hidden_layers: int = Field(gt=0)
    hidden_size: int = Field(gt=0)
    num_attention_heads: int = Field(gt=0)
    num_key_value_heads: int | None = Field(default=None, gt=0)
    head_dim: int | None = Field(default=None, gt=0)
    intermediate_size: int | None = Field(default=None, gt=0)
    vocab_size: int = Field(gt=0)
    max_position_embeddings: int = Field(gt=0)
    sliding_window: int | None = Field(default=None, ge=0)
    torch_dtype: Literal["float16", "bfloat16", "float32"] = "bfloat16"
    kv_lora_rank: int | None = Field(default=None, ge=0)
    qk_rope_head_dim: int | None = Field(default=None, ge=0)
    rope_scaling: Annotated[dict[str, Any], AfterValidator(_finite_tree)] | None = (
        None  # as in config.json; vLLM scales max_model_len by it
    )
    tie_word_embeddings: bool = False  # lm_head shares the embedding matrix (no second copy)


QUANT_RE = r"^[A-Za-z0-9_]{1,32}$"  # a llama-quantize file type as a file name ends with it (Q4_K_M)


def _quant(v: str) -> str:
    if re.fullmatch(QUANT_RE, v) is None:
        raise ValueError(f"{v!r} is not a quant type: letters, digits and '_', at most 32 (e.g. Q4_K_M)")
    return v


class QuantFile(Strict):
    """One candidate of a model profile's `quants:` (issue 15): a GGUF file of one quant type and
    its lock, as `vramc analyze --write` writes a model's own `gguf:`, `source:` and `lock:`."""

    quant: Annotated[str, AfterValidator(_quant)] = Field(json_schema_extra={"pattern": QUANT_RE})
    gguf: PathStr | None = None
    source: str | None = None
    lock: GGUFLock | None = None


class Quantization(Strict):
    method: Literal["awq", "gptq", "fp8", "bitsandbytes", "none"] = "none"
    bits: int | None = Field(default=None, ge=1)
    group_size: int | None = Field(default=None, ge=-1)  # -1: one group per column (GPTQ)


class Model(Strict):
    kind: Literal["model"] | None = None
    name: str | None = None
    description: str | None = None
    source: str | None = None  # where the locked figures came from
    gguf: PathStr | None = None
    mmproj: PathStr | None = None  # multimodal projector GGUF (llama-server --mmproj)
    mmproj_size: Bytes | None = None
    draft: PathStr | None = None  # draft model GGUF for speculative decoding (llama-server -md)
    draft_size: Bytes | None = None
    lock: GGUFLock | None = None
    # vLLM (safetensors) models; with `quant` (a llama-quantize file type such as Q4_K_M) the
    # llama.cpp engines plan the GGUF that config.json converts and quantizes to (vramc lock --config)
    hf: str | None = None
    config: HFConfig | None = None
    quant: str | None = None
    quantization: Quantization | None = None
    weights_size: Bytes | None = None  # total safetensors bytes, when known exactly
    params: float | None = Field(default=None, gt=0)  # parameter count, for weights estimates
    # the GGUF files of several quant types (issue 15): with `quant: auto` the planner picks the
    # largest that fits; with a fixed `quant:` the entry of that type
    quants: list[QuantFile] | None = Field(default=None, min_length=1)


GpuLayers = Union[Annotated[int, Field(ge=0)], Literal["all", "auto"]]


class Settings(Strict):
    # shared by the llama.cpp family
    ctx: Union[Annotated[int, Field(ge=0, le=MAX_TOKENS)], Literal["auto"], None] = None
    ctx_min: int | None = Field(default=None, ge=256, le=MAX_TOKENS)  # smallest context `auto` may choose (vramc)
    parallel: Union[Annotated[int, Field(ge=1, le=256)], Literal["auto"], None] = None  # LLAMA_MAX_SEQ
    batch: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    ubatch: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    gpu_layers: GpuLayers | None = None
    split_mode: Literal["none", "layer", "row"] | None = None
    tensor_split: Union[list[Annotated[float, Field(ge=0)]], Literal["auto"], None] = None
    main_gpu: int | None = Field(default=None, ge=0, le=255)
    flash_attn: OnOffAuto | None = None
    cache_type_k: Union[CacheType, Literal["auto"], None] = None
    cache_type_v: Union[CacheType, Literal["auto"], None] = None
    kv_unified: bool | None = None
    kv_offload: bool | None = None
    swa_full: bool | None = None
    load_mode: Literal["auto", "none", "mmap", "mlock", "mmap+mlock", "dio"] | None = None
    override_tensor: list[Annotated[str, AfterValidator(_override)]] | None = None
    cpu_moe: bool | None = None
    n_cpu_moe: int | None = Field(default=None, ge=0, le=512)  # LLAMA_MAX_LAYERS
    threads: int | None = Field(default=None, ge=1, le=4096)
    # serving
    host: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    api_key_file: PathStr | None = None
    alias: str | None = None
    # ollama
    keep_alive: str | int | None = None
    max_loaded_models: int | None = Field(default=None, ge=0)
    # vllm
    gpu_memory_utilization: Union[Annotated[float, Field(gt=0, le=1)], Literal["auto"], None] = None
    max_model_len: Union[Annotated[int, Field(ge=1, le=MAX_TOKENS)], Literal["auto"], None] = None
    max_num_seqs: Union[Annotated[int, Field(ge=1, le=MAX_TOKENS)], Literal["auto"], None] = None
    max_num_batched_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    kv_cache_dtype: Literal["auto", "float16", "bfloat16", "fp8", "fp8_e4m3", "fp8_e5m2"] | None = None
    tensor_parallel_size: Union[Annotated[int, Field(ge=1, le=256)], Literal["auto"], None] = None
    # --pipeline-parallel-size: the layers split into stages (get_pp_indices), TP GPUs each
    pipeline_parallel_size: int | None = Field(default=None, ge=1, le=256)
    # --distributed-executor-backend; unset: vLLM's (mp, with --nnodes across machines)
    distributed_executor_backend: Literal["mp", "ray"] | None = None
    master_port: int | None = Field(default=None, ge=1, le=65535)  # --master-port (mp across machines)
    # --kv-cache-memory-bytes: the KV cache size per GPU instead of what the utilization leaves
    kv_cache_memory_bytes: Bytes | None = Field(default=None, ge=1)
    cpu_offload_gb: float | None = Field(default=None, ge=0, le=2**20)
    enforce_eager: bool | None = None
    block_size: int | None = Field(default=None, ge=1, le=4096)
    dtype: Literal["auto", "float16", "bfloat16", "float32"] | None = None
    # CUDA device ordering for the process (CUDA_VISIBLE_DEVICES)
    device_order: Literal["index", "free_desc", "total_desc"] | None = None


def _code(code: str) -> str:
    if not re.fullmatch(CODE_PATTERN, code):
        raise ValueError(f"{code!r} is not a rule code (VR followed by three digits)")
    return code


RuleCode = Annotated[str, AfterValidator(_code)]


class LintConfig(Strict):
    margin: MarginSpec | None = None
    ignore: list[RuleCode] = []
    severity: dict[RuleCode, Literal["error", "warning", "info"]] = {}


class Variant(Strict):
    description: str | None = None
    margin: MarginSpec | None = None
    settings: Settings = Settings()
    env: dict[str, str | int | float | bool] = {}


# An Ollama model name (server/types/model/name.go): [host/][namespace/]model[:tag]; vramc keeps
# to letters, digits and ._- in each part so that a tag is safe in `ollama create TAG` and a file name.
TAG_RE = r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*){0,2}(:[A-Za-z0-9_][A-Za-z0-9._-]{0,127})?$"


def _tag(v: str) -> str:
    if re.fullmatch(TAG_RE, v) is None or len(v) > 350:
        raise ValueError(
            f"tag {v!r} is not an Ollama model name: write [namespace/]model[:tag] in "
            "letters, digits, '.', '_' and '-' (e.g. 'coder:7b')"
        )
    return v


class ServedModel(Strict):
    """One model of a server that serves several (`models:` of an `engine: ollama` deployment)."""

    name: str = Field(pattern=NAME_RE)
    description: str | None = None
    model: str | Model
    tag: Annotated[str, AfterValidator(_tag)] | None = None  # Ollama's model name; default: name
    settings: Settings = Settings()
    # llama-swap: seconds idle before it unloads the model; 0 never (its `ttl`; unset: the server's)
    ttl: int | None = Field(default=None, ge=0, le=2**31 - 1)


class SwapGroup(Strict):
    """A llama-swap group (its config.yaml `groups:`, with llama-swap's defaults)."""

    swap: bool = True  # only one member runs at a time
    exclusive: bool = True  # running a member unloads every other (non-persistent) group
    persistent: bool = False  # other groups never unload this one's members
    members: list[Annotated[str, Field(pattern=NAME_RE)]] = Field(min_length=1)


RPC_PORT = 50052  # rpc-server's default port (tools/rpc/rpc-server.cpp)


class HostUse(Strict):
    """One host a deployment spans: for llama.cpp one rpc-server (`--rpc ADDRESS:PORT`)."""

    host: str = Field(pattern=NAME_RE)
    port: int = Field(default=RPC_PORT, ge=1, le=65535)
    # positions in that host's `gpus` (default all of them; [] is its CPU backend)
    gpus: list[StrictInt] | None = None
    cache: bool = False  # rpc-server -c: tensors cached on the worker's disk
    bind: Address | None = None  # the address rpc-server listens on (default: the host's address)


def _host_use(v: Any) -> Any:
    if isinstance(v, str):
        return {"host": v}
    if not isinstance(v, (dict, BaseModel)):
        raise ValueError("a host is its name (box2) or a mapping {host: box2, port: 50052, gpus: [0]}")
    return v


HostRef = Annotated[HostUse, BeforeValidator(_host_use, json_schema_input_type=Union[str, HostUse])]


class DeploymentBody(Strict):
    kind: Literal["deployment"] | None = None
    name: str = Field(pattern=NAME_RE)
    description: str | None = None
    hardware: str | Hardware | None = None
    # one model, or (a server that serves several, issue 14) `models:`; the loader requires one
    model: str | Model | None = None
    models: list[ServedModel] | None = Field(default=None, min_length=1)
    # llama-swap (with `models:`): its groups, and its globalTTL in seconds (0: never unload)
    groups: dict[Annotated[str, Field(pattern=NAME_RE)], SwapGroup] | None = None
    ttl: int | None = Field(default=None, ge=0, le=2**31 - 1)
    engine: Engine
    settings: Settings = Settings()
    env: dict[str, str | int | float | bool] = {}
    variants: dict[Annotated[str, AfterValidator(_variant_name)], Variant] = {}
    lint: LintConfig | None = None
    # which GPUs of the hardware this deployment may use: positions in its `gpus` list (checked
    # against the hardware by the loader, VR113/VR114); [] is CPU-only for the llama.cpp engines
    gpus: list[StrictInt] | None = None
    # the other hardware hosts it spans, in order (llama.cpp: the --rpc order, RPC devices first;
    # vLLM: node ranks 1..N); checked against the hardware by the loader (VR115-VR119)
    hosts: list[HostRef] | None = None


class DeploymentFile(Strict):
    """A file holding several deployments that share one machine."""

    kind: Literal["deployments"] | None = None
    name: str | None = Field(default=None, pattern=NAME_RE)
    description: str | None = None
    hardware: str | Hardware
    lint: LintConfig | None = None
    deployments: list[DeploymentBody] = Field(min_length=1)
