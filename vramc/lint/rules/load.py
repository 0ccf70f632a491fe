"""Codes raised while reading and validating profiles. Registered here for `vramc rules` and
`vramc explain`; the loader (vramc.load.yamlpos, vramc.load.profiles, vramc.plan.planner) emits them."""

from vramc.diagnostics import Severity
from vramc.lint.registry import rule


@rule("VR000", "unreadable-file", Severity.ERROR, "load")
def _vr000():
    """The file or folder cannot be read.

    vramc could not open the path, or the file is not UTF-8 text.

    Bad:
        vramc check profiles/typo.yaml   # no such file

    Good:
        vramc check profiles/16gb.yaml
    """


@rule("VR001", "yaml-syntax", Severity.ERROR, "load")
def _vr001():
    """The file is not valid YAML.

    The position points at where the YAML parser gave up, which is often just after the mistake.

    Bad:
        settings:
          tensor_split: [16, 12

    Good:
        settings:
          tensor_split: [16, 12]
    """


@rule("VR002", "duplicate-key", Severity.ERROR, "load")
def _vr002():
    """A key appears twice in the same mapping.

    YAML silently keeps the last one, so one of the two values is ignored without a word.

    Bad:
        settings:
          ctx: 8192
          ctx: 4096

    Good:
        settings:
          ctx: 8192
    """


@rule("VR003", "unsupported-yaml", Severity.ERROR, "load")
def _vr003():
    """YAML features that profiles do not support (merge keys, complex keys).

    Use variants for shared settings instead of `<<:` merges.

    Bad:
        settings: &base
          ctx: 8192
          parallel: 2
        variants:
          small:
            settings:
              <<: *base
              ctx: 4096

    Good:
        settings:
          ctx: 8192
          parallel: 2
        variants:
          small:
            settings: {ctx: 4096}   # the other settings are the deployment's
    """


@rule("VR004", "unknown-profile-kind", Severity.ERROR, "load")
def _vr004():
    """vramc cannot tell whether the file is a hardware, model or deployment profile.

    Say it with `kind:`, or use the keys of one kind.

    Bad:
        name: box

    Good:
        kind: hardware
        name: box
        gpus:
          - {name: RTX 4090, vram: 24GiB}
    """


@rule("VR100", "unknown-key", Severity.ERROR, "load")
def _vr100():
    """A key that the profile format does not have (often a typo).

    Unknown keys are errors, not warnings: a misspelt `paralel` would otherwise be ignored and the
    deployment planned with the engine's default instead.

    Bad:
        settings:
          paralel: 2

    Good:
        settings:
          parallel: 2
    """


@rule("VR101", "invalid-value", Severity.ERROR, "load")
def _vr101():
    """A value of the wrong type or outside its allowed range.

    Sizes take a unit or are a bare number of MiB: B; K or KiB, M or MiB, G or GiB, T or TiB
    (powers of 1024); KB, MB, GB, TB (powers of 1000); any case, a space before the unit optional
    (`24GiB`, `24 gib`, `24G` are the same). A size is finite, not negative and at most 1 PiB.
    Fractions take `0.25` or `25%`. Numbers are finite everywhere (no `.inf` or `.nan`). Paths
    hold no NUL character and no component longer than 255 bytes; `override_tensor` patterns are
    regular expressions, as llama.cpp's `-ot` takes them (`.*`, not `*`).

    Bad:
        settings:
          gpu_layers: al

    Good:
        settings:
          gpu_layers: all
    """


@rule("VR102", "missing-key", Severity.ERROR, "load")
def _vr102():
    """A required key is missing.

    A deployment needs `name`, `hardware`, `model` and `engine`; a GPU needs `name` and `vram`.

    Bad:
        name: chat
        model: llama-3.1-8b-instruct-q8_0
        engine: llama-server

    Good:
        name: chat
        hardware: workstation
        model: llama-3.1-8b-instruct-q8_0
        engine: llama-server
    """


@rule("VR103", "decimal-vram-unit", Severity.WARNING, "load")
def _vr103():
    """A GPU's memory is written in decimal units (GB), which is probably not what the card has.

    GPU memory is sold in binary units: a "24 GB" card has 24 GiB (24,576 MiB), while `24 GB`
    means 24,000,000,000 bytes (22.35 GiB). vramc reads units literally, so this under-states the
    card by 7%. Write GiB, or the MiB figure that `nvidia-smi` or `vramc detect` shows.

    Bad:
        gpus:
          - {name: RTX 4090, vram: 24 GB}

    Good:
        gpus:
          - {name: RTX 4090, vram: 24GiB}
    """


@rule("VR104", "implausible-size", Severity.WARNING, "load")
def _vr104():
    """A GPU's memory or the host's RAM is implausibly small or large, usually a missing unit.

    A bare number is MiB (the unit nvidia-smi prints), so `vram: 24` is 24 MiB, not 24 GiB, and
    `24T` is 24 TiB. vramc warns when a GPU's `vram` is under 1 GiB or over 1 TiB, or `host_ram`
    under 1 GiB or over 64 TiB, and says how it read the value and which spelling was probably
    meant. Units: B; K/KiB, M/MiB, G/GiB, T/TiB (powers of 1024); KB, MB, GB, TB (powers of
    1000); any case, a space before the unit optional. A `margin` written as a bare number from
    1 to 100 is MiB too (`margin: 10` keeps 10 MiB of each GPU free, almost always meant as 10%):
    write `10%` or `10MiB` to say which.

    Bad:
        gpus:
          - {name: RTX 4090, vram: 24}

    Good:
        gpus:
          - {name: RTX 4090, vram: 24GiB}
    """


@rule("VR110", "reference-not-found", Severity.ERROR, "load")
def _vr110():
    """A named hardware or model profile does not exist.

    `hardware: NAME` resolves to `hardware/NAME.yaml` and `model: NAME` to `models/NAME.yaml` in
    the profiles folder (the nearest folder above the deployment that has them). The hint names
    the closest existing profile ("did you mean 'workstation'?"). A profile that exists but
    cannot be read (a symlink loop, no permission) is VR000 instead.

    Bad:
        hardware: workstaton

    Good:
        hardware: workstation
    """


@rule("VR111", "reference-invalid", Severity.ERROR, "load")
def _vr111():
    """A named hardware or model profile exists but is invalid or of the wrong kind.

    Fix the referenced file; its own diagnostics say what is wrong.

    Bad:
        model: hardware/workstation.yaml     # a hardware profile

    Good:
        model: llama-3.1-8b-instruct-q8_0
    """


@rule("VR112", "duplicate-deployment", Severity.ERROR, "load")
def _vr112():
    """Two deployments in one file have the same name.

    Names identify deployments in `vramc run NAME`, in `out/NAME/` and in plans.

    Bad:
        deployments:
          - {name: chat, model: mistral-7b-instruct-awq, engine: vllm, gpus: [0]}
          - {name: chat, model: qwen2.5-7b-instruct, engine: vllm, gpus: [1]}

    Good:
        deployments:
          - {name: coder, model: mistral-7b-instruct-awq, engine: vllm, gpus: [0]}
          - {name: chat, model: qwen2.5-7b-instruct, engine: vllm, gpus: [1]}
    """


@rule("VR113", "gpu-index-invalid", Severity.ERROR, "load")
def _vr113():
    """A deployment's `gpus` names a GPU the hardware does not have, a negative index, or one GPU twice.

    `gpus` counts positions in the hardware profile's `gpus` list from 0 (not the GPUs' `index`
    fields). Planned on the GPUs that remain, such a deployment would look fine while the engine
    sees other devices (or none, CPU-only); a repeated GPU would count as several devices. The
    error sits at the index and lists the GPUs that exist.

    Bad:
        gpus: [0, 2]     # the workstation has GPUs 0 and 1

    Good:
        gpus: [0, 1]
    """


@rule("VR114", "no-gpus-selected", Severity.ERROR, "load")
def _vr114():
    """A vLLM deployment has no GPU to run on: `gpus: []`, or hardware without GPUs.

    `gpus: []` hides every GPU (`CUDA_VISIBLE_DEVICES=`). llama-server, llama-cpp-python and
    Ollama then run on the CPU, and vramc plans them so; vLLM needs a GPU and cannot start.

    Bad:
        engine: vllm
        gpus: []

    Good:
        engine: vllm
        gpus: [0]
    """


@rule("VR115", "host-unknown", Severity.ERROR, "load")
def _vr115():
    """A deployment's `hosts:` names a host its hardware profile does not describe.

    A deployment spans other machines by name: each entry of its `hosts:` is the `name` of one of
    the hardware profile's `hosts:` (with its address, GPUs and RAM). The error lists the hosts
    that exist and the nearest name.

    Bad:
        hardware:
          gpus: [{name: RTX 4090, vram: 24GiB}]
          network: {trusted: true}
          hosts: [{name: box2, address: 192.168.1.12, gpus: [{name: RTX 3090, vram: 24GiB}]}]
        hosts: [box3]

    Good:
        hardware:
          gpus: [{name: RTX 4090, vram: 24GiB}]
          network: {trusted: true}
          hosts: [{name: box2, address: 192.168.1.12, gpus: [{name: RTX 3090, vram: 24GiB}]}]
        hosts: [box2]
    """


@rule("VR116", "host-duplicate", Severity.ERROR, "load")
def _vr116():
    """Two hosts of one hardware profile have the same name, or a vLLM deployment lists a host twice.

    Deployments name the hosts they span, so a name must say which machine it means. A vLLM
    deployment's `hosts:` are its nodes (node ranks 1..N): a machine is one node, so it is listed
    once, with the GPUs vLLM uses there (`{host: box2, gpus: [0, 1]}`). (llama.cpp may list a host
    several times: one rpc-server per entry, each on its own port.)

    Bad:
        hardware:
          gpus: [{name: RTX 4090, vram: 24GiB}]
          hosts:
            - {name: box2, address: 192.168.1.12}
            - {name: box2, address: 192.168.1.13}

    Good:
        hardware:
          gpus: [{name: RTX 4090, vram: 24GiB}]
          hosts:
            - {name: box2, address: 192.168.1.12}
            - {name: box3, address: 192.168.1.13}
    """


@rule("VR117", "host-gpu-invalid", Severity.ERROR, "load")
def _vr117():
    """A deployment's host entry selects a GPU that host does not have, or one GPU twice.

    `gpus:` in a `hosts:` entry counts positions in that host's `gpus` list from 0 (`[]` is the
    host's CPU backend). A GPU given to two entries (two rpc-servers) would be counted as two
    devices while llama.cpp would fill it twice.

    Bad:
        hardware:
          gpus: [{name: RTX 4090, vram: 24GiB}]
          network: {trusted: true}
          hosts: [{name: box2, address: 192.168.1.12, gpus: [{name: RTX 3090, vram: 24GiB}]}]
        hosts:
          - {host: box2, gpus: [1]}     # box2 has one GPU

    Good:
        hardware:
          gpus: [{name: RTX 4090, vram: 24GiB}]
          network: {trusted: true}
          hosts: [{name: box2, address: 192.168.1.12, gpus: [{name: RTX 3090, vram: 24GiB}]}]
        hosts:
          - {host: box2, gpus: [0]}
    """


@rule("VR118", "engine-single-host", Severity.ERROR, "load")
def _vr118():
    """The deployment spans several machines (`hosts:`) on an engine that cannot.

    llama-server reaches other machines through llama.cpp's RPC backend (`--rpc`) and vLLM through
    its multi-node setup. Ollama and llama-swap start llama-server on their own machine only, and
    llama-cpp-python 0.3.36's `Llama()` takes no RPC servers, so `vramc run` cannot load it there.

    Bad:
        hardware:
          gpus: [{name: RTX 4090, vram: 24GiB}]
          network: {trusted: true}
          hosts: [{name: box2, address: 192.168.1.12, gpus: [{name: RTX 3090, vram: 24GiB}]}]
        engine: llama-cpp-python
        hosts: [box2]

    Good:
        hardware:
          gpus: [{name: RTX 4090, vram: 24GiB}]
          network: {trusted: true}
          hosts: [{name: box2, address: 192.168.1.12, gpus: [{name: RTX 3090, vram: 24GiB}]}]
        engine: llama-server
        hosts: [box2]
    """


@rule("VR119", "rpc-endpoint-clash", Severity.ERROR, "load")
def _vr119():
    """Two rpc-servers of one deployment would listen on the same host and port.

    Several rpc-servers on one machine (one per GPU, or several on loopback) each need their own
    `port:`; the second could not bind and llama-server would connect twice to the first.

    Bad:
        hardware:
          gpus: []
          hosts: [{name: loop, address: 127.0.0.1, host_ram: 32GiB}]
        hosts:
          - {host: loop}
          - {host: loop}

    Good:
        hardware:
          gpus: []
          hosts: [{name: loop, address: 127.0.0.1, host_ram: 32GiB}]
        hosts:
          - {host: loop}
          - {host: loop, port: 50053}
    """


@rule("VR200", "model-unsized", Severity.ERROR, "load")
def _vr200():
    """vramc cannot size the model: its file is absent and it has no locked metadata.

    Lock the model where the file exists, commit the model profile, and refer to it: then every
    checkout can be checked without the 50 GB file.

    Bad:
        model:
          gguf: models/missing.gguf

    Good:
        model: llama-3.1-8b-instruct-q8_0   # profiles/models/..., written by `vramc analyze --write`
    """


@rule("VR201", "gguf-unreadable", Severity.ERROR, "load")
def _vr201():
    """The GGUF file exists but its header cannot be read.

    The file may be truncated (an interrupted download) or not a GGUF file at all. A path that is
    no regular file (a FIFO, a device) is never opened. A header that reads but that llama.cpp
    would refuse (no blocks or tensors, a value of the wrong type, an attention head of size 0, a
    Mamba-2 model without its ssm sizes, a tensor its architecture needs) is reported here too.

    Bad:
        model:
          gguf: models/half-downloaded.gguf

    Good:
        model:
          gguf: models/complete.gguf
    """


@rule("VR202", "lock-mismatch", Severity.WARNING, "load")
def _vr202():
    """The GGUF file no longer matches the metadata locked in its model profile.

    The file was replaced (another quantisation, a re-upload). vramc plans with the file, but the
    lock that other checkouts use is stale: regenerate it with `vramc analyze FILE --write PROFILE`.

    Bad:
        gguf: models/demo-tiny.gguf
        lock:
          file: {size: 437184, header_sha256: 0f3c...}   # of an older file

    Good:
        gguf: models/demo-tiny.gguf
        lock:   # re-locked: vramc analyze models/demo-tiny.gguf --write profiles/models/demo-tiny.yaml
          file: {size: 437216, header_sha256: 53f02e9c8bd656a6939f02e0dd6a03fdfc95492f6e0a82983155f9fbb38165ef}
    """


@rule("VR206", "config-underivable", Severity.ERROR, "load")
def _vr206():
    """The model's `config:` with a GGUF `quant:` does not give a tensor table vramc can derive.

    Without a file or a lock, a llama.cpp deployment can be planned from the model's Hugging Face
    config.json and the llama-quantize file type: vramc lays out the GGUF that convert_hf_to_gguf.py
    and llama-quantize would write (as `vramc lock --config` does). That needs an architecture
    vramc derives (Llama, Mistral, Qwen2, Gemma 2 and 3, Phi-3, ...; `config:` holds the dense
    fields only, so MoE models go through `vramc lock --config`) and a file type it models.

    Bad:
        model:
          config: {architecture: LlamaForCausalLM, num_hidden_layers: 32, hidden_size: 4096,
                   num_attention_heads: 32, vocab_size: 128256, max_position_embeddings: 131072}
          quant: Q4_K_X

    Good:
        model:
          config: {architecture: LlamaForCausalLM, num_hidden_layers: 32, hidden_size: 4096,
                   num_attention_heads: 32, num_key_value_heads: 8, intermediate_size: 14336,
                   vocab_size: 128256, max_position_embeddings: 131072}
          quant: Q4_K_M
    """


@rule("VR203", "lock-invalid", Severity.ERROR, "load")
def _vr203():
    """The locked metadata is inconsistent (unknown tensor type, malformed tensor entry).

    Locks are written by `vramc analyze --write`; regenerate rather than edit them by hand. The
    lock is checked as a GGUF header is (VR201): whole numbers where llama.cpp reads them, one per
    layer only where it allows, head sizes of at least 1, the tensors the architecture needs. The
    diagnostic points at the offending value.

    Bad:
        lock:
          tensors:
            token_embd.weight: [q9_9, 4096, 128256]

    Good:
        lock:
          tensors:
            token_embd.weight: [q8_0, 4096, 128256]
    """


# raised by the planner (vramc.plan.rpc.unknown_ram), so declared here, where vramc.lint.codes finds it
@rule("VR361", "rpc-host-ram-unknown", Severity.ERROR, "estimate")
def _vr361():
    """A host whose CPU serves the deployment (an rpc-server with no GPU) has no `host_ram`.

    Such an rpc-server allocates its share in the host's RAM, which is its device's capacity: the
    plan cannot say whether it fits without it. The deployment is not planned.

    Bad:
        hardware:
          gpus: [{name: RTX 4090, vram: 24GiB}]
          hosts: [{name: cpu-box, address: 127.0.0.1}]
        hosts: [cpu-box]

    Good:
        hardware:
          gpus: [{name: RTX 4090, vram: 24GiB}]
          hosts: [{name: cpu-box, address: 127.0.0.1, host_ram: 64GiB}]
        hosts: [cpu-box]
    """
