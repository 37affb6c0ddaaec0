"""Evaluation: the simulated user (robot), methods and baselines, the benchmark with its report and resume,
log analysis, demos and figures, large-volume and panel timing, the GPU check. May import every layer."""
