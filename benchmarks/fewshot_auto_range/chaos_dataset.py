"""The --dataset argument this folder's scripts share: the CHAOS T2-SPIR folder they read (training patients
only), by default ../shared/data/chaos-t2spir from the repository root."""
import argparse
from pathlib import Path

from InteractiveRefineLib.core.data import DecathlonDataset

ROOT = Path(__file__).resolve().parents[2]


def add_dataset_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", type=Path, default=ROOT / "../shared/data/chaos-t2spir",
                        help="CHAOS T2-SPIR folder (default: ../shared/data/chaos-t2spir from the repo root)")


def open_dataset(args: argparse.Namespace) -> DecathlonDataset:
    return DecathlonDataset(args.dataset.resolve())
