"""Run metrics: JSONL, TensorBoard, progress bar, and plots."""

from shieldwall.metrics.logger import MetricsLogger, read_metrics

__all__ = ["MetricsLogger", "read_metrics"]
