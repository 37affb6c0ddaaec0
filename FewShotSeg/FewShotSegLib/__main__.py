"""python -m FewShotSegLib: the few-shot commands are not built yet (skeleton module)."""
import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m FewShotSegLib",
                                     description="AdaptiveSeg FewShotSeg core. Not built yet: this version ships "
                                                 "the module skeleton only; segment/train/evaluate/demo come next.")
    parser.parse_args(argv)
    print("FewShotSeg: no commands yet in this version (the module is a skeleton).", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
