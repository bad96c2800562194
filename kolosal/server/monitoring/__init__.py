"""Monitoring: host and completion metrics as JSON and Prometheus, and the
engines' profiler timings."""
from .monitor import EXT, Monitoring, current_track, get_monitoring

__all__ = ["EXT", "Monitoring", "current_track", "get_monitoring"]
