"""Per-device memory models, one per engine family.

Every model answers the same question: for this model, these GPUs and these settings, how many
bytes land on each device and on the host, split into the columns llama.cpp itself reports
(model weights / context (KV and recurrent state) / compute buffers) plus a fixed overhead.
"""
