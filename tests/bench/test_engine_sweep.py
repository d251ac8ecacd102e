"""The engine sweep's reading of its curves: where the knee is, which setting wins."""

from bench.engine_sweep import QUOTED_AT, Point, chosen, knee, summary


def curve(*rates, first_token_ms=100.0, failed=0) -> dict:
    levels = (1, 4, 8, QUOTED_AT, 32)
    return {
        "points": [
            {"chats": n, "tokens_per_second": r, "first_token_ms": first_token_ms, "failed": failed}
            for n, r in zip(levels, rates, strict=True)
        ]
    }


def test_the_knee_is_the_fewest_chats_with_nine_tenths_of_the_best_throughput():
    points = [Point(**p) for p in curve(10, 35, 60, 95, 100)["points"]]
    assert knee(points) == QUOTED_AT
    points = [Point(**p) for p in curve(10, 91, 95, 99, 100)["points"]]
    assert knee(points) == 4
    assert knee([Point(chats=1, first_token_ms=None, tokens_per_second=None)]) is None


def test_the_most_throughput_over_the_curve_wins_and_a_near_tie_goes_to_the_lower_first_token():
    default = curve(10, 30, 50, 100, 110, first_token_ms=400)
    faster = curve(10, 30, 50, 130, 140, first_token_ms=500)
    assert chosen([default, faster]) == 1
    # Within 3 % of each other over the curve: the lower first token.
    near = curve(10, 29, 49, 98, 108, first_token_ms=300)
    assert chosen([default, near]) == 1
    slower_start = curve(10, 31, 50, 101, 111, first_token_ms=900)
    assert chosen([default, slower_start]) == 0


def test_first_tokens_within_a_tenth_are_a_tie_the_default_wins():
    default = curve(10, 30, 50, 100, 110, first_token_ms=400)
    bigger_cache = curve(10, 30, 50, 100, 111, first_token_ms=385)
    assert chosen([default, bigger_cache]) == 0
    clearly_sooner = curve(10, 30, 50, 100, 110, first_token_ms=300)
    assert chosen([default, clearly_sooner]) == 1


def test_one_wave_size_does_not_decide_alone():
    # Best at 16 chats by 4 %, behind at every other size: the curve as a whole loses.
    default = curve(10, 30, 50, 100, 110, first_token_ms=400)
    spike = curve(9, 27, 45, 104, 99, first_token_ms=400)
    assert chosen([default, spike]) == 0


def test_the_summary_is_the_geometric_mean_over_the_waves():
    rate, first = summary(curve(1, 4, 8, 16, 32, first_token_ms=250))
    assert round(rate, 6) == round((1 * 4 * 8 * 16 * 32) ** (1 / 5), 6)
    assert round(first, 6) == 250


def test_a_setting_whose_wave_failed_is_never_chosen():
    broken = curve(10, 30, 50, 500, 600, failed=1)
    assert chosen([curve(10, 30, 50, 100, 110), broken]) == 0
    assert chosen([broken]) is None
