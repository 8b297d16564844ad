"""The numpy reference forward pass (the oracle for the runtime); see ``model.py``."""

from sitegen.reference.model import KVCache, Model, load

__all__ = ["Model", "KVCache", "load"]
