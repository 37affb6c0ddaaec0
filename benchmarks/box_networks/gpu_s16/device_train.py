"""`train-box` on a lent GPU machine: the project's own command, its volumes read from volume_cache.py's file.

That machine has PyTorch but neither SimpleITK nor PyMaxflow, and no ../shared/data; training needs neither
package (images come from the cache), so stand-ins satisfy the imports and fail loudly if anything calls them.
    python3 device_train.py CACHE.npz [train-box arguments]
"""
from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parents[2] / "InteractiveRefine"), str(HERE)]


def _stand_in(name: str) -> None:
    try:
        importlib.import_module(name)
    except ImportError:
        mod = types.ModuleType(name)

        def missing(attr):
            if attr.startswith("__"):
                raise AttributeError(attr)
            return _Missing(f"{name}.{attr}")
        mod.__getattr__ = missing
        sys.modules[name] = mod


class _Missing:
    def __init__(self, what):
        self.what = what

    def __call__(self, *a, **k):
        raise RuntimeError(f"{self.what} is not on this machine")

    def __getattr__(self, attr):
        return _Missing(f"{self.what}.{attr}")


def main(argv):
    for name in ("SimpleITK", "maxflow"):
        _stand_in(name)
    import volume_cache

    from InteractiveRefineLib import cli
    from InteractiveRefineLib.training import train_box
    volumes = volume_cache.read(argv[0])
    train_box.load_sources = lambda part, root=None, limit=None: volumes[part]
    return cli.main(["train-box"] + argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
