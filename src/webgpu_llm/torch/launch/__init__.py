"""Launchers of the torch device: torch tensors -> a kernel spec of the package's kernels/, a
parameter block and bindings -> a launch on the stream (stream.py)."""
