"""The engine sweep's reading of its curves: where the knee is, which setting wins."""

from bench.engine_sweep import CHOSEN_AT, Point, chosen, knee


def curve(*rates, first_token_ms=100.0, failed=0) -> dict:
    levels = (1, 4, 8, CHOSEN_AT, 32)
    return {
        "points": [
            {"chats": n, "tokens_per_second": r, "first_token_ms": first_token_ms, "failed": failed}
            for n, r in zip(levels, rates, strict=True)
        ]
    }


def test_the_knee_is_the_fewest_chats_with_nine_tenths_of_the_best_throughput():
    points = [Point(**p) for p in curve(10, 35, 60, 95, 100)["points"]]
    assert knee(points) == CHOSEN_AT
    points = [Point(**p) for p in curve(10, 91, 95, 99, 100)["points"]]
    assert knee(points) == 4
    assert knee([Point(chats=1, first_token_ms=None, tokens_per_second=None)]) is None


def test_the_most_throughput_wins_and_a_near_tie_goes_to_the_lower_first_token():
    default = curve(10, 30, 50, 100, 110, first_token_ms=400)
    faster = curve(10, 30, 50, 130, 140, first_token_ms=500)
    assert chosen([default, faster]) == 1
    # Within 3 % of each other: the lower first token at 16 chats.
    near = curve(10, 30, 50, 98, 140, first_token_ms=300)
    assert chosen([default, near]) == 1
    slower_start = curve(10, 30, 50, 101, 140, first_token_ms=900)
    assert chosen([default, slower_start]) == 0


def test_a_setting_whose_wave_failed_is_never_chosen():
    broken = curve(10, 30, 50, 500, 600, failed=1)
    assert chosen([curve(10, 30, 50, 100, 110), broken]) == 0
    assert chosen([broken]) is None
