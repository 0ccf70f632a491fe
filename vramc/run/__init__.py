"""Run: load a checked deployment in-process with llama-cpp-python and serve it."""
