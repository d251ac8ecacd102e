"""docs/benchmarks.png: the figures of both parts in one picture."""

import logging

import matplotlib

matplotlib.use("Agg")  # no display: write a file
# The settings' root handler would print matplotlib's INFO notes over the summary.
logging.getLogger("matplotlib").setLevel(logging.WARNING)

import matplotlib.pyplot as plt  # noqa: E402

from bench import pipeline, vs_vllm  # noqa: E402


def draw(pipe: dict | None, vllm: dict | None, path) -> None:
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    fig.suptitle("cs-desk benchmarks (make bench), measured on a 2-core machine")
    if pipe is not None:
        _latency(axes[0][0], pipe)
        _outcomes(axes[0][1], pipe)
        _idle(axes[1][0], pipe)
    else:
        for ax in (axes[0][0], axes[0][1], axes[1][0]):
            ax.text(0.5, 0.5, "pipeline part not run", ha="center", va="center")
            ax.set_axis_off()
    if vllm is not None:
        _versus(axes[1][1], vllm)
    else:
        axes[1][1].text(0.5, 0.5, "vLLM comparison not run", ha="center", va="center")
        axes[1][1].set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _latency(ax, pipe: dict) -> None:
    steps = pipe["streams"]
    x = [s["streams"] for s in steps]
    for key, label, color in (
        ("first_token_ms", "first token", "tab:blue"),
        ("delta_lag_ms", "delta lag (whole step)", "tab:orange"),
    ):
        # A step with no such figure (no exact answer to time) is a gap, not a zero.
        ax.plot(x, [_or_gap(s[key]["p50"]) for s in steps], "o-", color=color, label=f"{label} p50")
        ax.plot(
            x, [_or_gap(s[key]["p99"]) for s in steps], "s--", color=color, label=f"{label} p99"
        )
    # The target is checked on this one: the arrival of the step's conversations (100 a
    # second) is in the whole step's p99 above, not in what a reader of a stream sees after.
    steady = [(s.get("delta_lag_all_streaming_ms") or {}).get("p99") for s in steps]
    ax.plot(
        x,
        [_or_gap(p99) for p99 in steady],
        "^-",
        color="tab:red",
        label="delta lag p99 while all stream",
    )
    ax.axhline(
        pipeline.LAG_TARGET_MS,
        color="red",
        lw=0.8,
        ls=":",
        label=f"target: p99 lag ≤ {pipeline.LAG_TARGET_MS} ms at {pipeline.SAFE_STREAMS}",
    )
    ax.axvline(pipeline.SAFE_STREAMS, color="grey", lw=0.8, ls=":")
    ax.set_yscale("log")
    ax.set_xlabel("concurrent streams (one Daphne process)")
    ax.set_ylabel("ms (log scale)")
    ax.set_title("Pipeline: first token and added delta lag")
    ax.legend(fontsize=8)


def _or_gap(value: float | None) -> float:
    return float("nan") if value is None else max(value, 1.0)  # log scale: nothing below 1


def _outcomes(ax, pipe: dict) -> None:
    steps = pipe["streams"]
    labels = [str(s["streams"]) for s in steps]
    bottom = [0] * len(steps)
    for key, color in (
        ("exact", "tab:green"),
        ("busy", "tab:olive"),
        ("failed", "tab:red"),
        ("wrong", "tab:purple"),
        ("lost", "black"),
    ):
        values = [s[key] / max(1, s["streams"]) * 100 for s in steps]
        ax.bar(labels, values, bottom=bottom, color=color, label=key)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_ylabel("% of answers")
    ax.set_xlabel("concurrent streams")
    ax.set_title("Pipeline: answers, and Daphne's CPU")
    twin = ax.twinx()
    twin.plot(labels, [s["daphne_cpu"] for s in steps], "ko-", label="Daphne CPU %")
    twin.set_ylabel("Daphne CPU, % of one core")
    twin.set_ylim(0, 110)
    ax.legend(loc="lower left", fontsize=8)
    twin.legend(loc="lower right", fontsize=8)


def _idle(ax, pipe: dict) -> None:
    steps = pipe["idle"]
    x = [s["target"] for s in steps]
    ax.plot(x, [s["daphne_rss_mb"] for s in steps], "o-", color="tab:blue", label="Daphne RSS")
    ax.set_xlabel("idle customer sockets")
    ax.set_ylabel("MB")
    ax.set_title(
        "Pipeline: idle sockets (all answered a ping)"
        if all(s["silent"] == 0 and s["answered_ping"] == s["target"] for s in steps)
        else "Pipeline: idle sockets (NOT all answered a ping)"
    )
    twin = ax.twinx()
    twin.plot(
        x, [s["daphne_cpu"] for s in steps], "s--", color="tab:orange", label="Daphne CPU % (idle)"
    )
    twin.set_ylabel("% of one core")
    twin.set_ylim(0, max(5.0, *(s["daphne_cpu"] * 1.2 for s in steps)))
    ax.legend(loc="upper left", fontsize=8)
    twin.legend(loc="lower right", fontsize=8)


def _versus(ax, vllm: dict) -> None:
    rows = vllm["rows"]
    names = list(rows)
    width = 0.35
    positions = range(len(names))
    ft = [rows[c]["compared"]["first_token_p50_ratio"] or 0 for c in names]
    tps = [rows[c]["compared"]["tokens_per_second_ratio"] or 0 for c in names]
    ax.bar([p - width / 2 for p in positions], ft, width, label="first token p50, ours/theirs")
    ax.bar([p + width / 2 for p in positions], tps, width, label="tokens/s, ours/theirs")
    ax.axhline(
        vs_vllm.FIRST_TOKEN_RATIO_MAX,
        color="tab:blue",
        ls=":",
        lw=1,
        label=f"first token target ≤ {vs_vllm.FIRST_TOKEN_RATIO_MAX}",
    )
    ax.axhline(
        vs_vllm.TOKENS_PER_SECOND_RATIO_MIN,
        color="tab:orange",
        ls=":",
        lw=1,
        label=f"tokens/s target ≥ {vs_vllm.TOKENS_PER_SECOND_RATIO_MIN}",
    )
    for p, value in zip(positions, ft, strict=True):
        ax.text(p - width / 2, value, f"{value:.2f}", ha="center", va="bottom", fontsize=8)
    for p, value in zip(positions, tps, strict=True):
        ax.text(p + width / 2, value, f"{value:.2f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(list(positions), [f"{c} chat{'s' if c != '1' else ''}" for c in names])
    ax.set_ylabel("ratio (ours / vLLM server)")
    ax.set_title("Whole stack vs vLLM's OpenAI server (same model)")
    ax.legend(fontsize=8)
