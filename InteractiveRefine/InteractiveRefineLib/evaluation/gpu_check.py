"""The compute process and both panels' headless paths on a CUDA GPU, once: `python -m
InteractiveRefineLib.evaluation.gpu_check --out DIR` (run it where a GPU is lent; about 5 minutes).

1. panel-timing on CUDA (box + 2 robot refinements per kidney, 2D and 3D) under both emulated main loops:
   compute times, the longest main-thread stall, the speed under the GIL-holding loop.
2. FewShotSeg's controller on CUDA (right kidney chaos_36 -> chaos_8, without and with 10 s of adaptation).
3. A real out-of-memory: the compute process holds all free GPU memory but 64 MB (debug.hog), then an
   InteractiveRefine 3D box and a FewShotSeg run: both must finish on the CPU and say so.
4. GPU memory used on the device (nvidia-smi) before the child starts, while it runs, and after stop().
Writes results.json and summary.md; each part records its error instead of stopping the others.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import traceback
from pathlib import Path


def gpu_used_mb():
    """Memory used on GPU 0 by all processes (nvidia-smi; this process never creates a CUDA context)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=30).stdout
        return float(out.strip().splitlines()[0])
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return None


def _kidney_request(device, adapt=False):
    from FewShotSegLib.panel.controller import FewShotRequest, slice_range
    from InteractiveRefineLib.core.data import DecathlonDataset
    from InteractiveRefineLib.core.sample import sample_dataset

    ds = DecathlonDataset(sample_dataset("chaos"))
    (s_img, s_lab), (q_img, _) = ds.load("chaos_36"), ds.load("chaos_8")
    return FewShotRequest(s_img, {"rk": s_lab == 2}, 11, q_img, 0, slice_range(2, 19), adapt, 10.0, device,
                          {"rk": "right kidney"})


def run(out: Path) -> dict:
    from FewShotSegLib.panel.controller import FewShotController
    from InteractiveRefineLib.compute.client import ComputeClient
    from InteractiveRefineLib.core.data import DecathlonDataset
    from InteractiveRefineLib.core.prompts import box_from_mask, main_object
    from InteractiveRefineLib.core.sample import sample_dataset
    from InteractiveRefineLib.evaluation.panel_timing import run_panel_timing, speed_ratios
    from InteractiveRefineLib.panel.refine_controller import RefineController

    out.mkdir(parents=True, exist_ok=True)
    res: dict = {"gpu_used_mb_before": gpu_used_mb()}
    client = ComputeClient(name="gpucheck")

    def part(name, fn):
        t0 = time.perf_counter()
        try:
            res[name] = fn()
        except Exception:  # noqa: BLE001  (recorded, the other parts still run)
            res[name] = {"error": traceback.format_exc(limit=5)}
        res[name + "_wall_s"] = round(time.perf_counter() - t0, 1)
        (out / "results.json").write_text(json.dumps(res, indent=1, default=str))

    def timing():
        records = run_panel_timing(out / "panel_timing", rounds=2, device="cuda", client=client)
        ratios = speed_ratios(records)
        return {"records": records, "ratio_min": min(ratios) if ratios else None,
                "max_stall_s": max(r["max_gui_stall_seconds"] for r in records),
                "memory": client.call("memory")[0]}

    def fewshot():
        c = FewShotController(client=client)
        runs = []
        for adapt in (False, True):
            c.start(_kidney_request("cuda", adapt))
            status = c.wait(600)
            runs.append({"adapt": adapt, "state": status.job.state, "error": str(status.job.error or ""),
                         "info": status.result.info if status.result else None, "device_text": c.device_text})
        return runs

    def oom():
        ds = DecathlonDataset(sample_dataset("chaos"))
        image, label = ds.load("chaos_8")
        ref = main_object(label == 2)
        c = RefineController(image, device="cuda", reference=label == 2, client=client)
        c.start_box(box_from_mask(ref, 0, int(ref.sum(axis=(1, 2)).argmax())))
        first = c.wait(600)
        hog = client.call("debug.hog", {"leave_mb": 64})[0]
        c.start_box(box_from_mask(ref))
        second = c.wait(600)
        fs = FewShotController(client=client)
        fs.start(_kidney_request("cuda"))
        few = fs.wait(600)
        released = client.call("debug.release")[0]
        result = {"hog": hog, "box_2d_before": first.job.state, "box_3d_state": second.job.state,
                  "box_3d_error": str(second.job.error or ""), "refine_device_text": c.device_text,
                  "fallback_events": [e for e in c.log.events if e.get("event") == "device_fallback"],
                  "fewshot_state": few.job.state, "fewshot_error": str(few.job.error or ""),
                  "fewshot_info": few.result.info if few.result else None, "after_release": released}
        c.close()
        return result

    part("panel_timing_cuda", timing)
    part("fewshot_cuda", fewshot)
    part("out_of_memory", oom)
    res["gpu_used_mb_child_running"] = gpu_used_mb()
    client.stop()
    time.sleep(2)
    res["gpu_used_mb_after_stop"] = gpu_used_mb()
    (out / "results.json").write_text(json.dumps(res, indent=1, default=str))
    (out / "summary.md").write_text(summary(res))
    return res


def summary(res: dict) -> str:
    t = res.get("panel_timing_cuda", {})
    lines = ["# GPU check of the compute process", ""]
    if "error" in t:
        lines.append(f"panel-timing on CUDA failed: {t['error']}")
    else:
        lines.append(f"panel-timing on CUDA: speed under the GIL-holding loop >= {t.get('ratio_min')} x free-running; "
                     f"longest main-thread stall {t.get('max_stall_s'):.3f} s; child memory {t.get('memory')}")
    for r in res.get("fewshot_cuda", []) if isinstance(res.get("fewshot_cuda"), list) else []:
        info = r.get("info") or {}
        lines.append(f"FewShotSeg (adapt {r['adapt']}): {r['state']} in {info.get('seconds')} s on {r['device_text']}")
    o = res.get("out_of_memory", {})
    lines.append(f"out of GPU memory: 3D box {o.get('box_3d_state')} on '{o.get('refine_device_text')}'; "
                 f"FewShotSeg {o.get('fewshot_state')} with fallback {(o.get('fewshot_info') or {}).get('fallback')}")
    lines.append(f"GPU memory used (MB): before {res.get('gpu_used_mb_before')}, child running "
                 f"{res.get('gpu_used_mb_child_running')}, after stop {res.get('gpu_used_mb_after_stop')}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m InteractiveRefineLib.evaluation.gpu_check")
    parser.add_argument("--out", default="gpu_check", help="output folder (results.json, summary.md)")
    args = parser.parse_args(argv)
    run(Path(args.out))
    print((Path(args.out) / "summary.md").read_text(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
