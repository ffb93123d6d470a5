"""Compatibility only (see __init__.py)."""

from ..launch.elementwise import copy_into

__all__ = ["copy_into"]
