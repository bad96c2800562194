"""Anthropic's Messages API: requests, answers, stream events and the error shape."""
