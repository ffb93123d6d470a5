"""The two kinds of failure a user can see.

`UserError` is the user's mistake (bad path, bad file, prompt too long): exit code 2.
`GpuError` is a runtime failure (no adapter, out of GPU memory, device lost): exit code 1.
Both carry a one-line message that names the problem and what to do about it; the CLI
prints it without a traceback unless `--debug` is given.
"""

from __future__ import annotations


class WebGpuLlmError(Exception):
    """Base class: a failure with a one-line, user-facing message."""

    exit_code = 1


class UserError(WebGpuLlmError):
    """The input is wrong: a path, a file, an option, a prompt."""

    exit_code = 2


class ModelFileError(UserError):
    """A model file is missing, truncated, corrupt or of an unsupported kind."""


class GpuError(WebGpuLlmError):
    """WebGPU could not do what was asked: no adapter, out of memory, device lost."""

    exit_code = 1
