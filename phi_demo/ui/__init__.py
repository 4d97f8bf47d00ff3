"""The Gradio page. Imports gradio; never torch or transformers."""

from phi_demo.ui.layout import CSS, build_demo

__all__ = ["CSS", "build_demo"]
