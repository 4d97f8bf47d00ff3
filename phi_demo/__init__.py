"""phi-demo: a Gradio chat demo for Phi-4-multimodal-instruct."""

__version__ = "0.1.0"
