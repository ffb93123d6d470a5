"""The engine: a model's weights and Programs on the GPU (`programs.py`), and the `Session`
that runs them (`session.py`), built from one `Settings` object (`settings.py`)."""

from .programs import Programs
from .sampling import SamplingParams
from .session import GenStats, Session
from .settings import Settings, Tuning, default_tuning

__all__ = ["GenStats", "Programs", "SamplingParams", "Session", "Settings", "Tuning", "default_tuning"]
