"""Deployments across machines (issue 17): llama.cpp's RPC backend, one rpc-server per entry of a
deployment's `hosts:` (vramc.plan.rpc). Memory of the workers (VR36x) and what an rpc-server
exposes (VR41x)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vramc.diagnostics import Severity
from vramc.lint.registry import Finding, rule, together
from vramc.units import fmt_size

if TYPE_CHECKING:
    from vramc.plan.planner import Plan

# ggml/include/ggml-rpc.h of the pinned llama.cpp (0c1e570): client and server must agree on the major
RPC_PROTO = "7.0.0"


def _spans(plan: Plan):
    from vramc.plan.rpc import spans

    return spans(plan.dep)


def _entry(plan: Plan, pos: int, key: str | None = None) -> tuple:
    """Where a finding about the deployment's hosts[pos] points: the key if written, else the entry."""
    raw = plan.dep.doc.raw
    entry = raw.get("hosts", [])[pos] if isinstance(raw, dict) else None
    if key and isinstance(entry, dict) and key in entry:
        return ("hosts", pos, key)
    return ("hosts", pos)


@rule("VR360", "rpc-host-ram", Severity.ERROR)
def rpc_host_ram(plan: Plan):
    """The rpc-servers on one host need more RAM than the host has.

    Each rpc-server reads every tensor llama-server sends it whole into host memory before copying
    it to its device, so its peak is its process, the largest such message, and, serving the
    host's CPU (a host without `gpus`, or `gpus: []` in the deployment's entry), its share of the
    weights, KV cache and compute buffers. Several rpc-servers on one machine (loopback, or one per
    NUMA node or GPU) share that RAM: vramc adds their peaks (the plan's `worker RAM` line) and
    compares them with the host's `host_ram`, and so for the deployments of a `deployments:` file
    that run together and start rpc-servers on one host (each its own port), naming each one's
    share. A single CPU device whose share alone is over its host's RAM is VR300.

    Bad:
        hardware:
          gpus: []
          hosts: [{name: loop, address: 127.0.0.1, host_ram: 8GiB}]
        settings: {ctx: 8192, gpu_layers: all, tensor_split: [1, 1]}
        hosts:                           # two rpc-servers of 4.4 GiB each
          - {host: loop, port: 50052}
          - {host: loop, port: 50053}

    Good:
        hardware:
          gpus: []
          hosts: [{name: loop, address: 127.0.0.1, host_ram: 16GiB}]
        settings: {ctx: 8192, gpu_layers: all, tensor_split: [1, 1]}
        hosts:
          - {host: loop, port: 50052}
          - {host: loop, port: 50053}
    """
    from vramc.plan.rpc import worker_ram

    positions = {span.name: span.position for span in reversed(_spans(plan))}
    for w in worker_ram(plan):
        if not w.host_ram or w.total_bytes <= w.host_ram:
            continue
        (one,) = w.servers if len(w.servers) == 1 else (None,)
        if one is not None and one.backend == "rpc" and one.buffers_bytes > w.host_ram:
            continue  # the device itself is over its capacity: VR300
        parts = ", ".join(
            f"{'+'.join(s.devices)} {fmt_size(s.total_bytes)}"
            + (f" ({fmt_size(s.buffers_bytes)} buffers)" if s.backend == "rpc" else " (process and largest message)")
            for s in w.servers
        )
        who = "the rpc-servers" if len(w.servers) > 1 else "the rpc-server"
        need, its = ("need", "their") if len(w.servers) > 1 else ("needs", "its")
        yield Finding(
            f"{who} on host {w.host} {need} {fmt_size(w.total_bytes)} of its RAM at {its} peak ({parts}) "
            f"but it has {fmt_size(w.host_ram)}",
            _entry(plan, positions[w.host]),
            "give the share to another host (lower its tensor_split entries), or describe the RAM it really has",
        )


@together("VR360")
def rpc_host_ram_together(plans: list[Plan]):
    """VR360 over the deployments that run together: each starts its own rpc-servers, so a host's
    RAM holds the peaks of all of them."""
    from vramc.plan.rpc import worker_ram

    by_host: dict[str, list] = {}
    for plan in plans:
        if plan.engine == "vllm":  # no rpc-servers
            continue
        for w in worker_ram(plan):
            by_host.setdefault(w.host, []).append((plan, w))
    for host, uses in by_host.items():
        if len(uses) < 2:
            continue
        have = uses[0][1].host_ram
        need = sum(w.total_bytes for _, w in uses)
        if not have or need <= have or any(w.total_bytes > have for _, w in uses):
            continue  # fits, or one deployment alone is over: its own VR360 (or VR300)
        if sum(s.buffers_bytes for _, w in uses for s in w.servers) > have:
            continue  # the CPU devices' buffers alone: VR312 names the host's RAM
        shares = ", ".join(f"{p.dep.label} {fmt_size(w.total_bytes)}" for p, w in uses)
        for plan, _w in uses:
            pos = next(span.position for span in _spans(plan) if span.name == host)
            yield (
                plan,
                Finding(
                    f"the rpc-servers on host {host} of the deployments that run together need {fmt_size(need)} "
                    f"of its RAM at their peak ({shares}) but it has {fmt_size(have)}",
                    _entry(plan, pos),
                    "give one deployment's share to another host (lower its tensor_split entries), "
                    "or describe the RAM it really has",
                ),
            )


LOOPBACK = ("localhost", "ip6-localhost")


def loopback(address: str) -> bool:
    """An address only this machine reaches: 127.0.0.0/8 or localhost."""
    import ipaddress

    if address.lower() in LOOPBACK:
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def ipv4(address: str) -> bool:
    """What rpc-server's --host takes: a dotted IPv4 address (inet_addr; 255.255.255.255 is its
    error value)."""
    import ipaddress

    try:
        return str(ipaddress.IPv4Address(address)) != "255.255.255.255"
    except ValueError:
        return False


@rule("VR410", "rpc-server-exposed", Severity.ERROR)
def rpc_server_exposed(plan: Plan):
    """An rpc-server would listen on a network address although the network is not declared trusted.

    llama.cpp's rpc-server has no authentication and no encryption: anyone who reaches its port
    can allocate memory and run graphs on the machine (tools/rpc/README.md: "never run the RPC
    server on an open network or in a sensitive environment"). It listens on the host's address
    unless `bind:` says otherwise. Across machines that is a network address: acknowledge a
    private network with `network: {trusted: true}` in the hardware profile (and firewall the
    port to the main host), or keep the server on loopback.

    Bad:
        hardware:
          gpus: [{name: RTX 4090, vram: 24GiB}]
          hosts: [{name: box2, address: 192.168.1.12, gpus: [{name: RTX 3090, vram: 24GiB}]}]
        hosts: [box2]

    Good:
        hardware:
          gpus: [{name: RTX 4090, vram: 24GiB}]
          network: {trusted: true}       # a private network, the port firewalled to this machine
          hosts: [{name: box2, address: 192.168.1.12, gpus: [{name: RTX 3090, vram: 24GiB}]}]
        hosts: [box2]
    """
    hw = plan.dep.hardware.obj
    if hw.network is not None and hw.network.trusted:
        return
    for span in _spans(plan):
        if loopback(span.bind):
            continue
        yield Finding(
            f"the rpc-server of host {span.name} would listen on {span.bind}:{span.port}, reachable from the "
            "network, and rpc-server has no authentication",
            _entry(plan, span.position, "bind"),
            "on a private network, declare it in the hardware profile (network: {trusted: true}) and firewall "
            "the port to the main host",
        )


@rule("VR412", "rpc-server-unreachable", Severity.ERROR)
def rpc_server_unreachable(plan: Plan):
    """An rpc-server would listen on loopback on another machine, or on a host name it cannot bind.

    llama-server connects to each rpc-server at the host's `address` (`--rpc ADDRESS:PORT`); an
    rpc-server bound to 127.0.0.1 accepts only connections from its own machine. Loopback is
    right only for a host whose address is loopback too (this machine). rpc-server listens on an
    IPv4 address only (ggml-rpc's socket_t::create_server reads `--host` with inet_addr): given a
    host name, `localhost` included, it prints "Invalid host address" and exits. A host whose
    `address:` is a name needs `bind:` (its IPv4 address, or 0.0.0.0).

    Bad:
        hardware:
          gpus: [{name: RTX 4090, vram: 24GiB}]
          network: {trusted: true}
          hosts: [{name: box2, address: 192.168.1.12, gpus: [{name: RTX 3090, vram: 24GiB}]}]
        hosts:
          - {host: box2, bind: 127.0.0.1}      # box2's address: 192.168.1.12

    Good:
        hardware:
          gpus: [{name: RTX 4090, vram: 24GiB}]
          network: {trusted: true}
          hosts: [{name: box2, address: 192.168.1.12, gpus: [{name: RTX 3090, vram: 24GiB}]}]
        hosts:
          - {host: box2}                       # listens on 192.168.1.12
    """
    for span in _spans(plan):
        if not ipv4(span.bind):
            where = _entry(plan, span.position, "bind")
            named = "its bind:" if where[-1] == "bind" else "the host's address; no bind:"
            yield Finding(
                f"the rpc-server of host {span.name} would listen on {span.bind!r} ({named}), which it cannot: "
                "rpc-server takes an IPv4 address, not a name (it prints 'Invalid host address' and exits)",
                where,
                "bind: the host's IPv4 address that this machine reaches (e.g. bind: 192.168.1.12), or 0.0.0.0",
            )
        elif loopback(span.bind) and not loopback(span.address):
            yield Finding(
                f"the rpc-server of host {span.name} would listen on {span.bind}, but llama-server connects to "
                f"{span.address}:{span.port}",
                _entry(plan, span.position, "bind"),
                f"remove bind: (it listens on {span.address}), or bind an address of the host that this machine reaches",
            )


@rule("VR411", "rpc-build-mismatch", Severity.WARNING)
def rpc_build_mismatch(plan: Plan):
    """A worker runs another llama.cpp build than the main host.

    llama-server refuses an rpc-server whose RPC protocol differs (ggml-rpc.cpp: "RPC server
    version mismatch"; RPC_PROTO_MAJOR_VERSION in ggml/include/ggml-rpc.h, 7 in the pinned
    build), and the protocol changes between builds without notice. Where the hardware profile
    states both builds (`llama_cpp:`), they should be the same; two hosts of one deployment with
    different builds cannot both match this machine's, stated or not.

    Bad:
        hardware:
          gpus: [{name: RTX 4090, vram: 24GiB}]
          llama_cpp: b7400
          network: {trusted: true}
          hosts: [{name: box2, address: 192.168.1.12, gpus: [{name: RTX 3090, vram: 24GiB}], llama_cpp: b6900}]
        hosts: [box2]

    Good:
        hardware:
          gpus: [{name: RTX 4090, vram: 24GiB}]
          llama_cpp: b7400
          network: {trusted: true}
          hosts: [{name: box2, address: 192.168.1.12, gpus: [{name: RTX 3090, vram: 24GiB}], llama_cpp: b7400}]
        hosts: [box2]
    """
    hw = plan.dep.hardware.obj
    names = [h.name for h in hw.hosts]
    workers = list({s.name: s for s in _spans(plan)}.values())
    # this machine's build unstated: two workers that differ cannot both match it
    main, whose = hw.llama_cpp, "this machine"
    if main is None:
        first = next((s for s in workers if s.host.llama_cpp is not None), None)
        if first is None:
            return
        main, whose = first.host.llama_cpp, f"host {first.name}"
    for span in workers:
        build = span.host.llama_cpp
        if build is None or build == main:
            continue
        yield Finding(
            f"host {span.name} runs llama.cpp {build} and {whose} {main}: llama-server refuses an "
            f"rpc-server of another RPC protocol version (the pinned build speaks {RPC_PROTO})",
            ("hosts", names.index(span.name), "llama_cpp"),
            "build the same llama.cpp release on every machine, then update llama_cpp here",
            target="hardware",
        )
