"""The README's box-network results are the benchmark records' (issue 11: the README results section is regenerated
from benchmarks/): benchmarks/box_networks/shipped_results.py --check fails while README.md or shipped.md differ from
what the records give, e.g. after a number was edited by hand or the records changed without regenerating."""
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "benchmarks" / "box_networks"


@pytest.fixture(scope="module")
def shipped_results():
    sys.path.insert(0, str(FOLDER))  # it imports report.py from its own folder
    try:
        spec = importlib.util.spec_from_file_location("shipped_results", FOLDER / "shipped_results.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(FOLDER))


def test_readme_box_table_is_generated_from_the_benchmark_records(shipped_results):
    text = (ROOT / "README.md").read_text()
    assert shipped_results.updated_readme(text) == text, "run python benchmarks/box_networks/shipped_results.py"
    assert (FOLDER / "shipped.md").read_text() == shipped_results.shipped_md()
    # the kidneys' 2D box, recomputed here from the raw records: the mean over kidneys of the slices' mean Dice
    recs = [json.loads(line) for line in (FOLDER / shipped_results.SHIPPED["chaos_2d"] / "results.jsonl").open()]
    kidneys = [r["dice"] for r in recs if r["method"] == "bifseg" and r["round"] == 0 and r["label"] in (2, 3)]
    assert len(kidneys) == 16  # 8 test patients x 2 kidneys
    assert f"| CHAOS kidneys (never trained on; 8 test patients) | 2D | **{np.mean(kidneys):.3f}** / " in text


def test_a_hand_edited_number_is_caught(shipped_results):
    text = (ROOT / "README.md").read_text()
    edited = text.replace("**0.941** / **0.973**", "**0.951** / **0.973**", 1)
    assert edited != text and shipped_results.updated_readme(edited) != edited
