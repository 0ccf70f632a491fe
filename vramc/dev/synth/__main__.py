"""python -m vramc.synth list | write NAME FTYPE OUT.gguf | tiny OUT.gguf | validate [NAME...]"""

from __future__ import annotations

import argparse
import sys

from vramc.dev.synth.quant import FTYPES
from vramc.dev.synth.shapes import CATALOG


def _list(_args) -> int:
    from vramc.dev.synth.writer import model_meta

    print(f"{'name':36} {'arch':9} {'layers':>6} {'vocab':>7} {'Q4_K_M GB':>10} {'BF16 GB':>9}")
    for name, s in CATALOG.items():
        q4, bf16 = (model_meta(s, ft).total_bytes / 1e9 for ft in ("Q4_K_M", "BF16"))
        print(f"{name:36} {s.arch:9} {s.n_layer:6d} {s.n_vocab:7d} {q4:10.2f} {bf16:9.2f}")
    return 0


def _write(args) -> int:
    from vramc.dev.synth.writer import write_sparse_gguf

    if args.name not in CATALOG:
        print(f"unknown shape {args.name!r}; see `python -m vramc.synth list`", file=sys.stderr)
        return 2
    path = write_sparse_gguf(args.out, CATALOG[args.name], args.ftype, imatrix=args.imatrix)
    print(path)
    return 0


def _tiny(args) -> int:
    from vramc.dev.synth.writer import write_tiny_model

    print(write_tiny_model(args.out, ftype=args.ftype, seed=args.seed))
    return 0


def _validate(args) -> int:
    from vramc.dev.synth.validate import format_table, validate

    unknown = [n for n in args.names if n not in CATALOG]
    if unknown:
        print(f"unknown shape(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    checks = validate(args.names or None, tuple(args.ftype or ("Q4_K_M", "Q8_0")), n_ctx=args.ctx)
    print(format_table(checks))
    return 0 if all(c.ok for c in checks) else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vramc.synth", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="catalog entries with their file sizes").set_defaults(fn=_list)
    w = sub.add_parser("write", help="a sparse GGUF of a catalog shape")
    w.add_argument("name")
    w.add_argument("ftype", type=str.upper, choices=FTYPES)
    w.add_argument("out")
    w.add_argument("--imatrix", action="store_true", help="types as quantized with an imatrix")
    w.set_defaults(fn=_write)
    t = sub.add_parser("tiny", help="a tiny runnable llama model")
    t.add_argument("out")
    t.add_argument("--ftype", type=str.upper, default="F32", choices=("F32", "F16", "Q8_0", "Q4_0"))
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(fn=_tiny)
    v = sub.add_parser("validate", help="load sparse files in llama-fit-params and compare")
    v.add_argument("names", nargs="*", metavar="NAME", help="catalog names (default: all)")
    v.add_argument("--ftype", action="append", type=str.upper, choices=FTYPES)
    v.add_argument("--ctx", type=int, default=4096)
    v.set_defaults(fn=_validate)
    args = p.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
