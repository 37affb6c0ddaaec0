"""The CHAOS protocol written out: folds, setting-2 exclusion, support chunk slices, query chunks, auto range."""
import numpy as np
import pytest

from FewShotSegLib.engine.protocol import (
    allowed_slices,
    base_labels,
    fold_cases,
    query_chunks,
    sort_ids,
    support_chunk_slices,
)
from FewShotSegLib.engine.query_range import keep_consistent_component
from InteractiveRefineLib.core.errors import DatasetError, PromptError

CHAOS_IDS = [f"chaos_{i}" for i in (1, 2, 3, 5, 8, 10, 13, 15, 19, 20, 21, 22, 31, 32, 33, 34, 36, 37, 38, 39)]


def test_folds_follow_the_released_protocol():
    assert sort_ids(["chaos_10", "chaos_2", "chaos_1"]) == ["chaos_1", "chaos_2", "chaos_10"]
    f0 = fold_cases(CHAOS_IDS[::-1], 0)
    assert f0["query"] == ["chaos_1", "chaos_2", "chaos_3", "chaos_5"] and f0["support"] == "chaos_8"
    assert len(f0["train"]) == 15 and not set(f0["train"]) & set(f0["query"] + [f0["support"]])
    f4 = fold_cases(CHAOS_IDS, 4)
    assert f4["query"] == ["chaos_36", "chaos_37", "chaos_38", "chaos_39"] and f4["support"] == "chaos_1"
    queries = [q for f in range(5) for q in fold_cases(CHAOS_IDS, f)["query"]]
    assert sorted(queries) == sorted(CHAOS_IDS)  # every patient is a query exactly once
    with pytest.raises(DatasetError):
        fold_cases(CHAOS_IDS, 5)


def test_setting_two_removes_slices_with_test_organs():
    label = np.zeros((6, 4, 4), int)
    label[1, 0, 0] = 2
    label[2, 1, 1] = 1
    label[4, 2, 2] = 3
    assert allowed_slices(label, 1, (2, 3)).all()
    assert allowed_slices(label, 2, (2, 3)).tolist() == [True, False, True, True, False, True]
    assert base_labels("lower") == (1, 4) and base_labels("upper") == (2, 3)


def test_chunk_protocol_picks_the_documented_slices():
    label = np.zeros((40, 8, 8), int)
    label[10:22, 2:5, 2:5] = 2          # 12 organ slices: 10..21
    # fractions 1/6, 1/2, 5/6 of the list -> indices 2, 6, 10 -> slices 12, 16, 20
    assert support_chunk_slices(label, 2) == [12, 16, 20]
    chunks = query_chunks(5, 13)        # 9 query slices -> 3 chunks of 3
    assert chunks.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert query_chunks(0, 0).tolist() == [0]
    assert np.bincount(query_chunks(0, 9)).tolist() == [3, 3, 4]   # z_max alone would be chunk 3: clipped
    with pytest.raises(PromptError, match="absent"):
        support_chunk_slices(label, 4)


def ssl_alpnet_part(z, z_min, z_max, npart=3):
    # SSL-ALPNet dataloaders/common.py ValidationDataset.__getitem__, written out independently
    try:
        part = int((z - z_min) // ((z_max - z_min) / npart))
    except ZeroDivisionError:
        part = 0
    return min(max(part, 0), npart - 1)


def test_query_chunks_equal_ssl_alpnets_formula_on_synthetic_ranges():
    differs = 0
    for z_min in (0, 3, 17):
        for length in range(1, 60):
            z_max = z_min + length - 1
            expected = [ssl_alpnet_part(z, z_min, z_max) for z in range(z_min, z_max + 1)]
            assert query_chunks(z_min, z_max).tolist() == expected, (z_min, z_max)
            floor_rule = [min(3 * i // length, 2) for i in range(length)]
            differs += expected != floor_rule
    assert differs > 0          # the old floor(3i/n) rule would fail this test
    # support slices: SSL-ALPNet's get_support fractions, int(pct * len(zlist)), on lists of every length
    half, interval = 1 / 6, (1.0 - 1.0 / 3) / 2
    for length in range(1, 60):
        label = np.zeros((80, 2, 2), int)
        label[10:10 + length, 0, 0] = 1
        zlist = list(range(10, 10 + length))
        assert support_chunk_slices(label, 1) == [zlist[int((half + interval * p) * length)] for p in range(3)]

    # the auto range's window places the support's chunk slices at the same fractions (one definition)
    from FewShotSegLib.engine.protocol import chunk_fractions
    from FewShotSegLib.engine.query_range import CHUNK_FRACTIONS
    assert CHUNK_FRACTIONS == tuple(chunk_fractions()) == (1 / 6, 1 / 2, 5 / 6)


def test_auto_range_keeps_the_component_under_the_support():
    mask = np.zeros((10, 20, 20), bool)
    mask[2:6, 2:6, 2:6] = True          # small, under the support footprint
    mask[1:9, 12:19, 12:19] = True      # larger look-alike elsewhere
    footprint = np.zeros((20, 20), bool)
    footprint[3:5, 3:5] = True
    kept = keep_consistent_component(mask, footprint, axis=0)
    assert kept[3, 3, 3] and not kept[5, 15, 15]
    # no component under the footprint: the largest one is kept
    far = np.zeros((20, 20), bool)
    far[0, 10] = True
    kept = keep_consistent_component(mask, far, axis=0)
    assert kept[5, 15, 15] and not kept[3, 3, 3]


def test_summary_table_per_organ_next_to_the_published_numbers(tmp_path):
    from FewShotSegLib.evaluation.summary import write_summary
    recs = [{"setting": 2, "adapted": False, "range": "gt", "label": lab, "label_name": name, "dice": d,
             "seconds": 1.0}
            for lab, name, ds in [(1, "liver", (0.8, 0.6)), (2, "right kidney", (0.9, 0.7))] for d in ds]
    text = write_summary(tmp_path, recs, "t").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| 2 | no | gt"))
    assert "70.00 +- 10.00" in row and "80.00 +- 10.00" in row and "**75.00**" in row and "| 4 |" in row
    assert "SSL-ALPNet | CRAPNet | DenseMP" in text and "73.02" in text and "78.84" not in text
