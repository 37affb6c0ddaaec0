"""The training-time validation (train_box.validate: box_sources "val" with 10 hippocampus subjects, network
without CRF) of existing box models, to choose where a new run starts (session 11).
Usage: python select_start.py NAME=MODEL.json ... > select_start.jsonl"""
import json
import sys

import torch

from InteractiveRefineLib.engine.models import load_model
from InteractiveRefineLib.training.box_sources import load_sources
from InteractiveRefineLib.training.train_box import validate, validation_cases

torch.set_num_threads(2)
cases = validation_cases(load_sources("val", limit=10))
for arg in sys.argv[1:]:
    name, path = arg.split("=", 1)
    net, manifest = load_model(path)
    print(json.dumps(dict(model=name, path=path, **validate(net, manifest["input"], cases, torch.device("cpu")))),
          flush=True)
