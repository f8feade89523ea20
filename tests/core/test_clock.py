"""Elapsed times (npvae_tf/core/clock.py)."""

import time

from npvae_tf.core.clock import clock, hms


def test_hms_rounds_to_the_second_and_carries_into_hours():
    assert hms(0) == "0:00:00"
    assert hms(59.6) == "0:01:00"
    assert hms(3 * 3600 + 62) == "3:01:02"


def test_clock_is_the_floor_of_the_time_since_a_start():
    assert clock(time.time() - 61.9) == "[0:01:01]"
