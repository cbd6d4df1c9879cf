"""Serving: the HTTP API (OpenAI-compatible chat and transcription routes) and the voice page."""
