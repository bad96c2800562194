"""The OpenAI-compatible API's request and response models."""
