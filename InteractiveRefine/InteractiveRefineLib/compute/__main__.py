"""Entry point of the compute process: `python -m InteractiveRefineLib.compute --folder F [--parent-pid P]
[--log FILE] [--threads N]`. Started by ComputeClient (with Slicer's PythonSlicer inside Slicer).

It takes the CPU thread default every command takes (core/threads.py: the idle cores, 1 to 4; torch's own,
one per core, was 2-5 times slower on a loaded machine), fixed when the process starts."""
import argparse
import logging
import os
import sys

from InteractiveRefineLib.core.threads import THREADS_HELP, set_threads, threads_arg


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m InteractiveRefineLib.compute")
    parser.add_argument("--folder", required=True, help="the mailbox folder shared with the client")
    parser.add_argument("--parent-pid", type=int, default=None, help="end when this process has ended")
    parser.add_argument("--log", default=None, help="send this process's stdout/stderr to this file")
    parser.add_argument("--threads", type=threads_arg, default=0, help=THREADS_HELP)
    args = parser.parse_args(argv)
    if args.log:  # a launcher's pipe that nobody reads must never fill up and block this process
        fd = os.open(args.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger(__name__).info("torch threads: %d", set_threads(args.threads))  # imports torch
    from InteractiveRefineLib.compute.service import serve

    return serve(args.folder, parent_pid=args.parent_pid)


if __name__ == "__main__":
    sys.exit(main())
