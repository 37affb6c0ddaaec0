"""analyze-logs reports a log of several objects (the demo's: four kidneys) per object, not as one case."""
from InteractiveRefineLib.core.log import InteractionLog
from InteractiveRefineLib.evaluation.analyze_logs import analyze_logs


def test_a_log_of_several_objects_gives_one_row_per_object(tmp_path):
    logs = tmp_path / "logs"
    log = InteractionLog(logs / "demo.jsonl")
    log.write("session_start", device="cpu")
    for oid, dice in (("right kidney 2d", 0.9), ("left kidney 2d", 0.7)):
        log.write("box", object=oid, compute_seconds=0.1, dice=dice - 0.1)
        log.write("scribble", object=oid, label="fg", voxels=5)
        log.write("refine", object=oid, compute_seconds=0.2, dice=dice)
    log.close()
    rows, table = analyze_logs(logs, tmp_path, target_dice=0.85)
    assert [(r["case"], r["final_dice"], r["interactions"]) for r in rows] == [
        ("right kidney 2d", 0.9, 3), ("left kidney 2d", 0.7, 3)]
    assert rows[0]["interactions_to_target"] == 3 and rows[1]["interactions_to_target"] is None
    assert "(no case id)" not in table and "| left kidney 2d | 1 |" in table
