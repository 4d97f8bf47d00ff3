"""Model cache, loading, adapters and streamed generation. Imports torch; never gradio."""

from .cache import ModelCache, ModelKey
from .generation import GenerationStats
from .service import Engine, EngineStatus

__all__ = ["Engine", "EngineStatus", "GenerationStats", "ModelCache", "ModelKey"]
