"""How long a comparison's cycles took, read from the runs' journals."""

from __future__ import annotations

from loop.study.report import cycle_span


def _event(event: str, cycle: int, time: float) -> dict:
    return {"event": event, "cycle": cycle, "time": time}


def test_span_runs_from_the_first_event_to_the_last_cycle_done() -> None:
    events = [{"event": "started", "time": 5.0},  # no cycle: not part of any cycle's time
              _event("planned", 0, 10.0), _event("cycle_done", 0, 20.0),
              _event("planned", 1, 21.0), _event("trained", 1, 30.0), _event("cycle_done", 1, 40.0)]
    assert cycle_span(events, range(0, 2)) == (10.0, 40.0)
    assert cycle_span(events, range(1, 2)) == (21.0, 40.0)
    assert cycle_span(events, range(2, 3)) is None


def test_scores_filled_in_by_a_later_resume_do_not_stretch_the_span() -> None:
    events = [_event("planned", 1, 21.0), _event("cycle_done", 1, 40.0),
              _event("real_val_evaluated", 1, 90_000.0)]
    assert cycle_span(events, range(1, 2)) == (21.0, 40.0)


def test_a_cycle_under_way_ends_at_its_last_event() -> None:
    events = [_event("cycle_done", 0, 20.0), _event("planned", 1, 21.0), _event("generated", 1, 25.0)]
    assert cycle_span(events, range(0, 2)) == (20.0, 25.0)
