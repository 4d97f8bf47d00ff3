"""The Gradio page. Imports gradio; never torch or transformers."""

from .layout import CSS, build_demo

__all__ = ["CSS", "build_demo"]
