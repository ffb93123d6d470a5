"""`webgpu-llm characterize`: WebGPU dispatch overhead measured the way the literature does.

Modules, in the order a run uses them: config (how much to measure), harness (device, wait,
trivial dispatches), methods (naive / sequential / batched, items 1–3), breakdown (per-call
costs, item 4), sweep (kernel size with GPU timestamps, item 5), cuda (torch reference,
item 6), ablations (end-to-end hook for the model engine), derive (ratios, crossovers, the
comparison with the study), runner (the JSON document), report and plots (outputs).
The JSON schema is documented in docs/characterize.md.
"""
