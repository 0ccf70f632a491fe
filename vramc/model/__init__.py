"""Model: what a GGUF file says (header, tensors, hyper-parameters) and its lock in a model profile."""
