"""reelserve: a self-hosted video generation server speaking the Kling/Runware wire protocols.

Importing this package is cheap on purpose: no torch, diffusers, transformers or av here.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
