"""End-to-end benchmarks: tg128 / pp512 of the engine, optional peers (PyTorch CUDA)."""
