"""The load test's greedy check (bench.serve_load.divergence): a mismatch counts as a near tie only when the two
tokens were within TIE_NATS of each other in one of the two answers' own top-two logprobs."""

from __future__ import annotations

from bench.serve_load import TIE_NATS, divergence


def step(chosen: str, **others: float) -> tuple[str, dict[str, float]]:
    return chosen, {chosen: -1.0, **others}


def test_equal_answers_do_not_part() -> None:
    answer = [step("a", b=-2.0), step("c", d=-1.5)]
    assert divergence(answer, list(answer)) is None


def test_a_near_tie_in_the_load_answer_is_reported_as_one() -> None:
    load = [step("a", b=-2.0), step("x", y=-1.0 - TIE_NATS / 2), step("z")]
    alone = [step("a", b=-2.0), step("y", x=-1.0 - TIE_NATS / 2), step("w")]
    where = divergence(load, alone)
    assert where is not None and where["position"] == 1 and where["near_tie"]
    assert where["load"] == "x" and where["alone"] == "y" and 0 < where["gap_nats"] <= TIE_NATS


def test_a_clear_winner_replaced_is_unexplained() -> None:
    # the token the load answer took was second best, far behind, in the replay: what stale inputs would give
    load = [step("a", b=-2.0), step("x", y=-1.5)]
    alone = [step("a", b=-2.0), step("y", x=-1.5)]
    where = divergence(load, alone)
    assert where is not None and not where["near_tie"] and where["gap_nats"] == 0.5


def test_a_token_outside_the_top_two_is_unexplained() -> None:
    where = divergence([step("x", q=-1.0001)], [step("y", r=-1.0001)])
    assert where is not None and where["gap_nats"] is None and not where["near_tie"]


def test_answers_of_different_lengths_part_where_the_shorter_ends() -> None:
    answer = [step("a"), step("b")]
    where = divergence(answer, answer[:1])
    assert where is not None and where["position"] == 1 and not where["near_tie"]
