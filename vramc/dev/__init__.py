"""Developer tools: synthetic GGUF files (synth) and the llama.cpp oracle; never imported by commands."""
