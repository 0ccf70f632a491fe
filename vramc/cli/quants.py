"""`vramc plan --quants hf://ORG/REPO`: what it prints and its exit code (the planning is
vramc.plan.quants)."""

from __future__ import annotations

import sys

from vramc.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE


def cli_quants(plans, ref_text: str) -> int:
    from vramc.engines import ENGINES
    from vramc.model.gguf import GGUFError
    from vramc.model.remote import RemoteError
    from vramc.plan.quants import quant_rows, render, repository_quants

    notes: list[str] = []
    try:
        repo, commit, metas, transferred = repository_quants(ref_text, notes)
    except (RemoteError, GGUFError) as e:
        sys.stderr.write(f"vramc plan: {e}\n")
        return EXIT_FAILED
    sys.stderr.write("".join(notes))
    llama = [p for p in plans if ENGINES[p.engine].family != "vllm"]
    if not llama:
        sys.stderr.write("vramc plan: --quants plans GGUF deployments (llama.cpp engines); none was given\n")
        return EXIT_USAGE
    sys.stderr.write(f"{repo}@{commit[:12]}: {len(metas)} quant files, {transferred:,} bytes of headers read\n")
    for p in llama:
        sys.stdout.write(render(p.dep.name, quant_rows(p, metas)))
    return EXIT_OK
