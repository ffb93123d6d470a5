"""engine/waves.py: the model of a prompt matmul's waves that Tuning.sms splits K by."""

import pytest

from webgpu_llm.engine.waves import Split, by_waves, fill_splits, plan_split, split_cost, tail_split
from webgpu_llm.kernels.mma import TileShape

FLOAT = TileShape(4, 2, 2, 4, double=True)  # 128 x 128 (the float prompts' default)
WIDE = TileShape(4, 2, 4, 4)  # 256 tokens x 128 rows (gate/up's)


@pytest.mark.parametrize(("groups", "measured_us"), [(68, 44.5), (132, 47.3), (264, 97.3), (396, 154.1), (528, 212.2)])
def test_the_model_follows_the_measured_waves(groups, measured_us):
    """The H100's 1.5B gate/up walk (K 1536, 512 tokens) on as many 128 x 128 workgroups:
    within 15 % of what it took, a wave at a time (docs/performance.md)."""
    rows = groups // 4 * 128  # 4 token blocks of 128
    assert split_cost(rows, 1536, 512, FLOAT, 132, 1, False) == pytest.approx(measured_us, rel=0.15)


def test_a_matmul_of_many_waves_stays_whole():
    """gate/up of the 1.5B (280 workgroups of 256 x 128): splitting adds waves and partials."""
    assert fill_splits(17920, 1536, 512, WIDE, 132, 16, epilogue_dispatch=True) == 1


def test_a_matmul_of_half_a_wave_splits_to_fill_it():
    """QKV of the 1.5B: 64 workgroups for 132 multiprocessors split 2 ways (3 would take a
    second wave); down (48 workgroups, K 8960) fills its waves with shorter walks."""
    assert fill_splits(2048, 1536, 512, FLOAT, 132, 16, epilogue_dispatch=True) == 2
    down = fill_splits(1536, 8960, 512, FLOAT, 132, 16)
    assert down > 1 and split_cost(1536, 8960, 512, FLOAT, 132, down, False) < split_cost(1536, 8960, 512, FLOAT, 132, 4, False)


def test_splits_stay_within_the_inputs_and_the_most_allowed():
    """A split takes at least one unit of 32 inputs, and at most `most` splits."""
    assert fill_splits(128, 64, 16, FLOAT, 1000, 16) <= 2
    assert fill_splits(128, 8192, 16, FLOAT, 1000, 4) <= 4
    assert fill_splits(128, 8192, 16, FLOAT, 1000, 1) == 1


def test_a_last_wave_mostly_idle_splits_as_a_tail():
    """The 1.5B gate/up's 280 workgroups: its first 264 (132 row blocks of 64 pairs, two whole
    waves) whole, the last 16 split 8 ways (128 workgroups, one wave), cheaper than whole."""
    us, pair0, ways = tail_split(8960, 1536, 512, WIDE, 132, 16)
    assert (pair0, ways) == (132 * 64, 8)
    assert us < split_cost(17920, 1536, 512, WIDE, 132, 1, True)
    assert plan_split(17920, 8960, 1536, 512, WIDE, 132, 16, epilogue_dispatch=True) == Split(1, 8448, 8)


def test_no_tail_without_whole_waves_or_room_to_split_it():
    """Less than a wave (the 1.5B QKV: 64 workgroups) has no whole waves to keep; Gemma 3's
    gate/up (216 workgroups) leaves 84 for a last wave, too many to split in one; a matmul
    whose epilogue has no kernel of its own (O, down) never splits a tail."""
    assert tail_split(1024, 1536, 512, FLOAT, 132, 16) is None
    assert tail_split(6912, 1152, 512, WIDE, 132, 16) is None
    assert plan_split(17920, 8960, 1536, 512, WIDE, 132, 16, epilogue_dispatch=False).tail_ways == 1


def test_only_tiles_of_128_by_128_outputs_and_more_go_by_waves():
    """64 x 64 tiles ran several a multiprocessor (the sweep's time followed their count), so
    the model prices only the float tiles, gate/up's and the wide quantized 2x2x4x4."""
    assert by_waves(FLOAT) and by_waves(WIDE) and by_waves(TileShape(2, 2, 4, 4))
    assert not by_waves(TileShape(2, 2, 2, 2)) and not by_waves(TileShape(1, 4, 2, 2))
