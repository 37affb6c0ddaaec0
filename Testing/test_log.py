"""The interaction log is written through after every event and survives a torn last line."""
import json

from InteractiveRefineLib.core.log import InteractionLog, read_log


def test_events_are_on_disk_immediately(tmp_path):
    path = tmp_path / "logs" / "session.jsonl"
    log = InteractionLog(path, session={"participant": "p01", "case": "chaos_8"})
    log.write("box", voxels=12, dice=0.91)
    lines = path.read_text().splitlines()  # read before close: nothing may wait in a buffer
    assert [json.loads(l)["event"] for l in lines] == ["session_start", "box"]
    ev = json.loads(lines[1])
    assert ev["voxels"] == 12 and ev["t"] >= json.loads(lines[0])["t"]
    log.close()


def test_reopening_appends_and_torn_line_is_skipped(tmp_path):
    path = tmp_path / "s.jsonl"
    with InteractionLog(path) as log:
        log.write("a")
    with open(path, "a") as f:
        f.write('{"event": "b", "t"')  # a crash mid-write
    with InteractionLog(path) as log:
        log.write("c")
    assert [e["event"] for e in read_log(path)] == ["a", "c"]


def test_numpy_values_at_any_depth(tmp_path):
    import numpy as np
    with InteractionLog(tmp_path / "n.jsonl") as log:
        log.write("refine", ok=np.bool_(True), box={"lo": (np.int64(1), 2)}, dice=np.float32(0.5))
    ev = read_log(tmp_path / "n.jsonl")[0]
    assert ev["ok"] is True and ev["box"]["lo"] == [1, 2] and ev["dice"] == 0.5
