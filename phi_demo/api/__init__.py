"""Phi-4-multimodal for other programs: the OpenAI-compatible routes, the speech-to-text
routes and the MCP tools, on the same request path and engine as the page."""
