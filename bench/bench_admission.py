"""Admission round cost vs cluster size (pure decision, no I/O).

One admission round = jobs + nodes + DCGM samples -> decisions, exactly what
the operator's loop computes every `admission_interval_s`. Measured for
growing (queued jobs x GPU nodes) against a small baseline in the same run,
so the ratios hold on a noisy machine:

    .venv/bin/python bench/bench_admission.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from datetime import timedelta

from zopilot_operator.scheduler import admission_round
from zopilot_operator.settings import OperatorSettings
from zopilot_operator.testing import JobBuilder, NodeBuilder, at, sample

SIZES = [(10, 2), (100, 10), (1000, 100), (1000, 1000), (10_000, 1000), (10_000, 10_000)]


def scenario(jobs: int, nodes: int, seed: int = 0) -> tuple[list, list, list]:  # type: ignore[type-arg]
    rng = random.Random(seed)
    node_objs = [NodeBuilder(f"gpu-{i}").obj() for i in range(nodes)]
    samples = [sample(f"gpu-{i}", rng.randint(4000, 24000)) for i in range(nodes)]
    job_objs = [
        JobBuilder(f"job-{j}", f"ns-{j % 7}")
        .priority(rng.choice([0, 0, 0, 10]))
        .queued(rng.choice([2048, 4096, 8192, 10240, 20480]))
        .obj()
        for j in range(jobs)
    ]
    return job_objs, node_objs, samples


def measure(jobs: int, nodes: int, rounds: int, settings: OperatorSettings) -> tuple[float, int]:
    """Median wall seconds of one round, and how many it admits."""
    median, _, admitted = measure_cpu(jobs, nodes, rounds, settings)
    return median, admitted


def measure_cpu(
    jobs: int, nodes: int, rounds: int, settings: OperatorSettings
) -> tuple[float, float, int]:
    """Median wall seconds and median CPU seconds of one round, and how many it admits.

    On a shared machine the CPU time (this process only) is the steadier figure.
    """
    job_objs, node_objs, samples = scenario(jobs, nodes)
    now = at(5)
    times, cpu, admitted = [], [], 0
    for _ in range(rounds):
        t0, c0 = time.perf_counter(), time.process_time()
        r = admission_round(job_objs, node_objs, samples, now, settings)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        admitted = len(r.admitted)
    return statistics.median(times), statistics.median(cpu), admitted


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    settings = OperatorSettings(metrics_max_age_s=timedelta(days=1).total_seconds())
    rows = [
        (jobs, nodes, *measure_cpu(jobs, nodes, args.rounds, settings)) for jobs, nodes in SIZES
    ]
    base, base_cpu = rows[0][2], rows[0][3]
    header = ("jobs", "nodes", "median ms", "x baseline", "CPU ms", "x baseline", "admitted")
    print("{:>6} {:>6} {:>10} {:>11} {:>9} {:>11} {:>9}".format(*header))
    for jobs, nodes, t, cpu, admitted in rows:
        print(
            f"{jobs:>6} {nodes:>6} {t * 1000:>10.2f} {t / base:>11.1f} {cpu * 1000:>9.2f} "
            f"{cpu / base_cpu:>11.1f} {admitted:>9}"
        )


if __name__ == "__main__":
    main()
