"""The model: its runtime settings, loading (and int4), the one cache of it, generation, and the engines
(local, ZeroGPU, an OpenAI-compatible server). Importing this package loads nothing: the
OpenAI-compatible backend must keep torch out of the process."""
