"""``python -m gennet_toolkit.task_queue worker module:attr``: run a worker for a queue.

``module:attr`` names a :class:`TaskQueue` (or a zero-argument function returning one)
in an importable module; importing that module registers its tasks.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from gennet_toolkit.task_queue._base import TaskQueue

__all__ = ["main"]


def load_queue(spec: str) -> TaskQueue:
    """The queue named by ``module:attr`` (``attr`` defaults to ``queue``)."""
    module_name, _, attr = spec.partition(":")
    obj = getattr(importlib.import_module(module_name), attr or "queue")
    if not isinstance(obj, TaskQueue) and callable(obj):
        obj = obj()
    if not isinstance(obj, TaskQueue):
        raise SystemExit(f"{spec} is not a TaskQueue")
    return obj


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run the worker."""
    parser = argparse.ArgumentParser(prog="python -m gennet_toolkit.task_queue")
    sub = parser.add_subparsers(dest="command", required=True)
    work = sub.add_parser("worker", help="run a worker for the queue's tasks")
    work.add_argument("queue", help="module:attr of a TaskQueue, e.g. myapp.tasks:queue")
    work.add_argument("--burst", action="store_true", help="RQ: stop when the queue is empty")
    work.add_argument("--concurrency", type=int, default=1)
    work.add_argument("--loglevel", default="INFO")
    args = parser.parse_args(argv)
    sys.path.insert(0, "")  # like `celery -A` and `rq worker`: the current directory
    load_queue(args.queue).worker(
        burst=args.burst, concurrency=args.concurrency, loglevel=args.loglevel
    )


if __name__ == "__main__":
    main()
