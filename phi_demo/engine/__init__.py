"""The model: where it runs (runtime), loading (and int4), the one cache of it, who has it
(interleave), the one generation routine, and the engines (local, ZeroGPU, an
OpenAI-compatible server). Importing this package loads nothing: the OpenAI-compatible
backend must keep torch out of the process."""
