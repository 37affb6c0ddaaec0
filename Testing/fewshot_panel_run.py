"""Running a FewShotSeg panel request through the compute protocol, as the panel tests do."""
from FewShotSegLib.panel.controller import FewShotController


def run_fewshot_panel(request, segmenter, timeout: float = 300):
    """A FewShotSeg panel request run through the compute protocol (FewShotController) with `segmenter`
    serving every device; the finished job's status (asserted done)."""
    panel = FewShotController(segmenter_factory=lambda device: segmenter)
    try:
        panel.start(request)
        status = panel.wait(timeout)
    finally:
        panel.shutdown()
    assert status.job.state == "done", status.job.error
    return status
