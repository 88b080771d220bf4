"""Numbers as a person reads them, and progress bars that promise nothing they cannot know."""

from __future__ import annotations

import re

import pytest
from tqdm import tqdm

from voxtral_tts.reporting import STEPS_FORMAT, bytes_text, count_text, steps

#: what tqdm prints for a remaining time ("<04:26", "<?") or a rate ("6.66s/tensor", "2.10tensor/s")
ESTIMATE = re.compile(r"<[\d?]|\d(s/|[a-z]+/s)|\?[a-z]*/s")


@pytest.mark.parametrize("n, text", [(0, "0"), (950, "950"), (12_345, "12.3 k"), (999_949, "999.9 k"),
                                     (999_950, "1.0 M"), (2_208_112, "2.2 M"), (999_999_999, "1.0 B"),
                                     (4_003_000_000, "4.0 B")])
def test_counts_in_a_unit_read_at_a_glance(n, text):
    assert count_text(n) == text


@pytest.mark.parametrize("n, text", [(512, "512 bytes"), (6144, "6.0 KB"), (36_864, "36.0 KB"),
                                     (5 * 2**20, "5.0 MB"), (2**30, "1.0 GB"), (2**30 - 1, "1.0 GB")])
def test_sizes_in_a_unit_read_at_a_glance(n, text):
    assert bytes_text(n) == text


def test_tqdms_default_format_estimates_and_the_steps_format_does_not(capsys):
    """After one slow first step tqdm's own format promises minutes; the steps format counts."""
    default = tqdm.format_meter(1, 139, 10.6, unit="tensor", prefix="codec.onnx")
    assert ESTIMATE.search(default), default  # the pattern recognises an estimate
    for n, total in ((1, 139), (62, 139), (0, None)):
        line = tqdm.format_meter(n, total, 10.6, unit="tensor", prefix="codec.onnx", bar_format=STEPS_FORMAT)
        assert not ESTIMATE.search(line) and f"{n}/{total or '?'} tensor [00:10]" in line, line
    for _ in steps(range(3), desc="loading weights", unit="tensor"):
        pass
    drawn = capsys.readouterr().err
    assert "loading weights: 100%" in drawn and "3/3 tensor [00:00]" in drawn and not ESTIMATE.search(drawn), drawn
