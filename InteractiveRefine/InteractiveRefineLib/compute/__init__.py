"""The persistent compute process: the panels' long work (box prediction, refinement, few-shot runs) runs in
one long-lived child Python process that owns the sessions and the model cache, so Slicer's main thread,
which holds Python's GIL while Qt idles, never starves it.

mailbox: JSON messages + .npy arrays as files (no pickle); service: the child's request loop and handlers;
client: the GUI side (start, requests, non-blocking polling, cancel, crash detection, restart, stop).
"""
from .client import ComputeClient, ComputeError, shared_client  # noqa: F401
