"""The mean of several saved box models' weights (models of one run's validations, RUN_DIR/snapshots), saved
as one model; the choice between it and the single snapshots is then made on validation (select_start.py).
The network has no normalisation statistics, so the mean of the weights is the whole model.
Usage (repository root): python benchmarks/box_networks/average_snapshots.py OUT.json SNAPSHOT.json ..."""
import sys

import torch

from InteractiveRefineLib.engine.models import load_model, read_manifest, save_model


def main(out: str, paths) -> None:
    nets = [load_model(p)[0] for p in paths]
    first = read_manifest(paths[0])
    if any(read_manifest(p)["arch_params"] != first["arch_params"] for p in paths):
        raise SystemExit("the snapshots are not one architecture")
    mean = {k: torch.stack([n.state_dict()[k].float() for n in nets]).mean(0) for k in nets[0].state_dict()}
    nets[0].load_state_dict(mean)
    extra = {"input": first["input"], "command": "average_snapshots.py " + " ".join([out, *paths]),
             "training": {"averaged_from": [str(p) for p in paths],
                          "validations": [read_manifest(p).get("validation") for p in paths]}}
    save_model(nets[0], first["architecture"], out, first["arch_params"], extra)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
