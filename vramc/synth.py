"""`python -m vramc.synth ...`: the command the shipped profiles, README and Makefile give for the
synthetic GGUF files, kept as it was; the generator itself is vramc.dev.synth."""

if __name__ == "__main__":
    import runpy

    runpy.run_module("vramc.dev.synth", run_name="__main__", alter_sys=True)
