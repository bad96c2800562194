"""Ollama's API: requests and answers of /api/chat, /api/generate, /api/embed and the model listings."""
