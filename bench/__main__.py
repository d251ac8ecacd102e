"""`python -m bench [--quick] [--only pipeline|vllm|api|knowledge|scorecard|sweep|prefix]`: run the
benchmark, print the figures, write docs/benchmarks.md and docs/benchmarks.png."""

import argparse
import dataclasses
import sys
import time

from tqdm import tqdm

from bench import (
    api_latency,
    engine_sweep,
    knowledge,
    pipeline,
    prefix_cache,
    report,
    scorecard,
    vs_vllm,
)
from bench.processes import LOG_DIR, bench_environment, use_bench_database


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small steps and few rounds, to try the benchmark out (~3 min)",
    )
    parser.add_argument(
        "--only",
        choices=("pipeline", "vllm", "api", "knowledge", "scorecard", "sweep", "prefix"),
        help="run one part; the other part's section of the report is kept",
    )
    parser.add_argument(
        "--eager",
        action="store_true",
        help="part 2 with both engines eager (starts in ~40 s, not minutes; not what `make run` "
        "serves, so not the issue's figures)",
    )
    parser.add_argument(
        "--second-desk",
        metavar="NAME=VALUE",
        action="append",
        default=[],
        help="part 2: a second Daphne on the same worker with this setting (repeatable), "
        "measured as one more side in the same alternation",
    )
    parser.add_argument("--out", default="docs", help="folder of benchmarks.md/.png (docs)")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="measure nothing: write the page and chart again from the last "
        "run's figures (var/bench/*.json)",
    )
    args = parser.parse_args()
    if args.report_only:
        paths = report.rewrite(out_dir=args.out)
        print("Written: " + ", ".join(str(p) for p in paths))
        return 0
    started = time.monotonic()
    results = {}
    try:
        with bench_environment("bench") as bench:
            use_bench_database(bench)
            if args.only in (None, "pipeline"):
                tqdm.write("Part 1: the pipeline against one Daphne process (synthetic tokens)")
                results["pipeline"] = pipeline.run(
                    bench, pipeline.QUICK if args.quick else pipeline.FULL
                )
                bench.flush_redis()
            if args.only in (None, "vllm"):
                tqdm.write("Part 2: the whole stack against vLLM's own OpenAI server")
                plan = vs_vllm.QUICK if args.quick else vs_vllm.FULL
                if args.eager:
                    plan = dataclasses.replace(plan, eager=True)
                if args.second_desk:
                    second = tuple(tuple(s.split("=", 1)) for s in args.second_desk)
                    plan = dataclasses.replace(plan, second_desk=second)
                results["vllm"] = vs_vllm.run(bench, plan)
                bench.flush_redis()
            if args.only in (None, "api"):
                tqdm.write("Part 3: what the HTTP API adds to the first token")
                results["api"] = api_latency.run(
                    bench, api_latency.QUICK if args.quick else api_latency.FULL
                )
            if args.only in (None, "knowledge"):
                tqdm.write("Part 4: knowledge retrieval")
                results["knowledge"] = knowledge.run(bench)
            if args.only in (None, "scorecard"):
                tqdm.write("Part 5: the answer scorecard, each embedded model")
                results["scorecard"] = scorecard.run(
                    bench, scorecard.QUICK if args.quick else scorecard.FULL
                )
            if args.only in (None, "sweep"):
                tqdm.write("Part 6: the engine's settings, swept on the whole stack")
                results["sweep"] = engine_sweep.run(
                    bench, engine_sweep.QUICK if args.quick else engine_sweep.FULL
                )
            if args.only in (None, "prefix"):
                tqdm.write("Part 7: the prompt's layout and vLLM's prefix cache")
                results["prefix"] = prefix_cache.run(
                    bench, prefix_cache.QUICK if args.quick else prefix_cache.FULL
                )
    except KeyboardInterrupt:
        print("\nInterrupted: nothing written.", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        print(f"\nbenchmark failed: {exc}\nProcess logs: {LOG_DIR / 'bench.log'}", file=sys.stderr)
        return 1
    paths = report.write(
        results, out_dir=args.out, quick=args.quick, minutes=(time.monotonic() - started) / 60
    )
    print("\n" + report.summary(results))
    print("Written: " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
