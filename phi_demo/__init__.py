"""phi-demo: a Gradio chat demo for Phi-4-multimodal-instruct."""

__version__ = "0.4.0"  # the one version number (pyproject.toml reads it)
