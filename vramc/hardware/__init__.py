"""Hardware: GPUs as vramc knows them by name, and as NVML reports them on this machine."""
