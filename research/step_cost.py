"""What model options cost per training step, measured where the machine is shared: CPU time.

    python -m research.step_cost listops --dtype bfloat16 --set short_conv=4 --set output_gate=true
    python -m research.step_cost text --dtype float32 --set short_conv=4 --repeats 5
    python -m research.step_cost text --base short_conv=null --base output_gate=false --set short_conv=4

Builds the training step that ``hrrformer bench --model TASK`` times
(:class:`hrrformer.bench_methods.ModelWorkload`: the task's ``cpu`` preset model, batch and length,
random tokens) once per variant — the preset (with ``--base`` options: the reference the others
are compared to, as the Text preset without the parts it has), each ``--set`` alone, and all of
them together — and times their training steps (forward under autocast for bf16,
cross-entropy, backward, Adam) **interleaved**, one step of each variant in turn, at one thread.
Each step is timed with ``time.thread_time()``, the CPU time of this thread. It does not count
time spent descheduled, so a training run on the other core disturbs it far less than it disturbs
wall time. It still counts memory stalls, which a neighbour lengthens a little. Prints the
minimum and median per variant and the extra over the preset. ``hrrformer bench`` gives the wall
time on a quiet machine.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from hrrformer.bench import model_option
from hrrformer.bench_methods import ModelWorkload
from hrrformer.perf import keep_freed_memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="bfloat16")
    parser.add_argument(
        "--set", action="append", type=model_option, default=[], metavar="FIELD=VALUE", help="a model option"
    )
    parser.add_argument(
        "--base",
        action="append",
        type=model_option,
        default=[],
        metavar="FIELD=VALUE",
        help="an option of every variant",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per variant (after one warm-up)")
    args = parser.parse_args()
    keep_freed_memory()
    torch.set_num_threads(1)
    options, base = dict(args.set), dict(args.base)
    variants = {"preset": base, **{f"{k}={v}": {**base, k: v} for k, v in options.items()}}
    if len(options) > 1:
        variants["all of them"] = {**base, **options}
    dtype = getattr(torch, args.dtype)
    cpu = torch.device("cpu")
    workloads = {
        name: ModelWorkload({"task": args.task, "method": "hrr", "model_options": opts}, cpu, dtype)
        for name, opts in variants.items()
    }
    times: dict[str, list[float]] = {name: [] for name in workloads}
    for repeat in range(args.repeats + 1):
        for name, workload in workloads.items():
            workload.reset()
            start = time.thread_time()
            workload.step()
            if repeat:  # the first round warms up
                times[name].append(time.thread_time() - start)
    base = min(times["preset"])
    for name, values in times.items():
        print(
            f"{args.task} {args.dtype} {name:28s} min {1000 * min(values):7.1f} ms  "
            f"median {1000 * statistics.median(values):7.1f} ms  {100 * (min(values) / base - 1):+.0f} %"
        )


if __name__ == "__main__":
    main()
