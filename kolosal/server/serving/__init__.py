"""Serving: from an engine and a validated request to response models or
streamed chunks; the HTTP routes only parse, call and send."""
