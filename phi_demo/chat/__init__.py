"""Conversations: message shapes, the Phi-4 prompt, request building with its media loader, what stays in the prompt, saved chats, feedback. No model, no gradio."""
