"""Compatibility only: the torch device's launchers are in launch/ and its WGSL in the package's
kernels/. transfer.py still imports `copy_into` from here; remove this package when it imports
from launch/."""
