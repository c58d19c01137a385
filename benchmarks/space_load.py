"""Load test of the Gradio Space: many `gradio_client` requests at a fixed concurrency against a running app.

Not a unit test: it measures, it does not assert. Start the app first, e.g.

    TRANSGAN_SPACE_MODELS=path/to/pipeline GRADIO_SERVER_PORT=7860 python spaces/app.py &
    python benchmarks/space_load.py --url http://127.0.0.1:7860/ --requests 200 --concurrency 16

Requests alternate between /generate and /interpolate (see --endpoints). Each request is followed through the queue:
the script reports errors (grouped by message; "queue full" rejections separately), end-to-end latency percentiles,
how long requests waited in the queue and the longest queue seen, and the throughput. Exit code 1 if any request
failed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from gradio_client import Client
from gradio_client.utils import Status

STATUS_POLL_SECONDS = 0.05
STARTED = {Status.PROCESSING, Status.PROGRESS, Status.ITERATING, Status.FINISHED}


@dataclass
class Outcome:
    endpoint: str
    latency: float
    queue_wait: float | None
    max_rank: int | None
    max_queue_size: int | None
    error: str | None = None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:7860/", help="address of the running app")
    parser.add_argument("--requests", type=int, default=200, help="number of requests (default: 200)")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight at once (default: 16)")
    parser.add_argument("--endpoints", default="generate,interpolate",
                        help="comma-separated endpoints to cycle through: generate, interpolate")
    parser.add_argument("--num_images", type=int, default=4, help="images per /generate request (default: 4)")
    parser.add_argument("--num_candidates", type=int, default=1, help="best of N per /generate request")
    parser.add_argument("--num_steps", type=int, default=8, help="frames per /interpolate request (default: 8)")
    args = parser.parse_args(argv)
    args.endpoints = [name.strip() for name in args.endpoints.split(",") if name.strip()]
    unknown = set(args.endpoints) - {"generate", "interpolate"}
    if unknown or not args.endpoints:
        parser.error(f"--endpoints: unknown {sorted(unknown)}; use generate and/or interpolate")
    for name in ("requests", "concurrency", "num_images", "num_candidates", "num_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    return args


def run_request(client: Client, args: argparse.Namespace, index: int) -> Outcome:
    """Submit one request and follow its status until it ends; never raises."""
    endpoint = args.endpoints[index % len(args.endpoints)]
    if endpoint == "generate":
        arguments = dict(seed=index, num_images=args.num_images, truncation=0.7, num_candidates=args.num_candidates)
    else:
        arguments = dict(seed_a=index, seed_b=index + 1, num_steps=args.num_steps)
    start = time.monotonic()
    started = None
    max_rank = max_queue_size = None
    try:
        job = client.submit(**arguments, api_name=f"/{endpoint}")
        while not job.done():
            status = job.status()
            if status.rank is not None and status.code == Status.IN_QUEUE:
                max_rank = max(max_rank or 0, status.rank + 1)  # rank 0 = first in line
            if status.queue_size is not None:
                max_queue_size = max(max_queue_size or 0, status.queue_size)
            if started is None and status.code in STARTED:
                started = time.monotonic()
            time.sleep(STATUS_POLL_SECONDS)
        result = job.result()
        expected = args.num_images if endpoint == "generate" else args.num_steps
        images = result if endpoint == "generate" else result[0]
        error = None if len(images) == expected else f"expected {expected} images, got {len(images)}"
    except Exception as exception:  # measured and reported, not raised: one failure must not stop the run
        error = f"{type(exception).__name__}: {exception}"
    end = time.monotonic()
    queue_wait = (started - start) if started is not None else None
    return Outcome(endpoint, end - start, queue_wait, max_rank, max_queue_size, error)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100])."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))]


def report(outcomes: list[Outcome], wall: float, args: argparse.Namespace) -> int:
    failures = [o for o in outcomes if o.error]
    rejected = [o for o in failures if "queue is full" in o.error.lower() or "queue_full" in o.error.lower()]
    print(f"{len(outcomes)} requests at concurrency {args.concurrency} against {args.url} "
          f"({', '.join(args.endpoints)}; {args.num_images} images x {args.num_candidates} candidates, "
          f"{args.num_steps} interpolation steps)")
    print(f"wall time {wall:.1f} s, throughput {len(outcomes) / wall:.2f} requests/s")
    print(f"errors: {len(failures)} (queue full: {len(rejected)})")
    for message, count in Counter(o.error for o in failures).most_common(5):
        print(f"  {count} x {message}")
    succeeded = [o for o in outcomes if not o.error]
    for endpoint in [None, *args.endpoints]:
        group = [o for o in succeeded if endpoint is None or o.endpoint == endpoint]
        if not group:
            continue
        latencies = [o.latency for o in group]
        name = f"/{endpoint}" if endpoint else "all"
        print(f"latency {name} (n={len(group)}): p50 {percentile(latencies, 50):.2f} s, "
              f"p95 {percentile(latencies, 95):.2f} s, max {max(latencies):.2f} s")
    waits = [o.queue_wait for o in succeeded if o.queue_wait is not None]
    if waits:
        print(f"queue wait (submit -> processing, n={len(waits)}): p50 {percentile(waits, 50):.2f} s, "
              f"p95 {percentile(waits, 95):.2f} s, max {max(waits):.2f} s, mean {statistics.mean(waits):.2f} s")
    ranks = [o.max_rank for o in outcomes if o.max_rank is not None]
    sizes = [o.max_queue_size for o in outcomes if o.max_queue_size is not None]
    print(f"queue: {len(ranks)} of {len(outcomes)} requests were seen waiting in line; deepest position "
          f"{max(ranks, default=0)}, largest queue reported {max(sizes, default=0)}")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    client = Client(args.url, verbose=False, analytics_enabled=False)
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
        outcomes = list(pool.map(lambda i: run_request(client, args, i), range(args.requests)))
    return report(outcomes, time.monotonic() - start, args)


if __name__ == "__main__":
    sys.exit(main())
