"""Terminal output: bar charts of probabilities and the progress line."""

from __future__ import annotations

import io

from digitstream.clients.terminal import ProgressLine, bar_chart, format_duration


def test_a_bar_chart_has_one_line_per_digit_with_bars_proportional_to_probability() -> None:
    probabilities = [0.0] * 10
    probabilities[3], probabilities[8] = 0.75, 0.25
    lines = bar_chart(probabilities, width=20, mark=3).splitlines()
    assert len(lines) == 10
    assert lines[3] == "  3 ███████████████       75.0%  <"
    assert lines[8] == "  8 █████                 25.0%"
    assert lines[0] == "  0                        0.0%"


def test_a_bar_chart_falls_back_to_ascii_and_draws_eighths_on_unicode() -> None:
    assert bar_chart([0.5] + [0.0] * 9, width=4, unicode=False).splitlines()[0] == "  0 ##    50.0%"
    assert bar_chart([0.53125] + [0.0] * 9, width=4).splitlines()[0] == "  0 ██▏   53.1%"


def test_the_progress_line_shows_count_percentage_rate_and_eta() -> None:
    line = ProgressLine(1000, stream=io.StringIO(), width=10)
    line._started -= 2.0  # as if started two seconds ago
    line.update(500)
    text = line.render()
    assert text.startswith("[#####-----]  500/1,000  50%") or text.startswith("[█████·····]  500/1,000  50%")
    assert "250 samples/s" in text
    assert "ETA 0:02" in text


def test_off_a_terminal_only_the_final_line_is_written() -> None:
    stream = io.StringIO()
    line = ProgressLine(10, stream=stream)
    for done in range(11):
        line.update(done)
    assert stream.getvalue() == ""
    line.finish()
    assert stream.getvalue().count("\n") == 1 and "10/10 100%" in stream.getvalue()


def test_durations_read_like_clocks() -> None:
    assert [format_duration(s) for s in (5, 65, 3725, float("inf"))] == ["0:05", "1:05", "1:02:05", "--:--"]
