"""The `webgpu-llm` command line."""
