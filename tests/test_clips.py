import numpy as np
import pytest

from avemo.clips import (
    CLIP_FRAMES,
    NO_FRAME,
    clip_ends,
    clip_frames,
    sequences,
    to_frames,
    window_has_face,
)


def mask(n, missing=()):
    present = np.ones(n, bool)
    present[list(missing)] = False
    return present


def test_full_window_takes_every_fourth_frame_back_from_the_end():
    assert clip_frames(100, mask(200)).tolist() == [72, 76, 80, 84, 88, 92, 96, 100]


def test_window_with_24_to_31_faces_takes_every_third_present_frame():
    present = mask(200, missing=range(69, 75))  # window 69..100 keeps 26 frames
    available = [f for f in range(69, 101) if present[f]]
    assert len(available) == 26
    assert clip_frames(100, present).tolist() == available[::-1][::3][:8][::-1]
    assert clip_frames(100, present).tolist() == [79, 82, 85, 88, 91, 94, 97, 100]


def test_window_with_16_to_23_faces_takes_every_second_present_frame():
    present = mask(200, missing=range(80, 92))  # 20 present: 69..79 and 92..100
    expected = [f for f in range(69, 101) if present[f]][::-1][::2][:8][::-1]
    assert clip_frames(100, present).tolist() == expected
    assert expected == [74, 76, 78, 92, 94, 96, 98, 100]


def test_window_with_8_to_15_faces_takes_the_last_eight():
    present = np.zeros(200, bool)
    present[[70, 71, 80, 85, 86, 90, 91, 95, 99, 100]] = True
    assert clip_frames(100, present).tolist() == [80, 85, 86, 90, 91, 95, 99, 100]


def test_fewer_than_eight_repeats_the_last_present_frame():
    present = np.zeros(200, bool)
    present[[70, 75, 90]] = True
    assert clip_frames(100, present).tolist() == [70, 75, 90, 90, 90, 90, 90, 90]


def test_missing_end_frame_counts_back_from_last_present():
    present = mask(200, missing=[100])  # 31 present -> dilation 3 from frame 99
    assert clip_frames(100, present).tolist() == [78, 81, 84, 87, 90, 93, 96, 99]


def test_window_without_faces_is_an_all_zero_clip():
    present = mask(200, missing=range(60, 110))
    assert clip_frames(100, present).tolist() == [NO_FRAME] * CLIP_FRAMES


def test_window_is_cut_at_the_start_of_the_video():
    # end 5: frames 0..5 exist (6 < 8) -> repeat last; end 20: 21 frames -> every 2nd
    assert clip_frames(5, mask(100)).tolist() == [0, 1, 2, 3, 4, 5, 5, 5]
    assert clip_frames(20, mask(100)).tolist() == [6, 8, 10, 12, 14, 16, 18, 20]


def test_window_has_face_counts_the_32_frame_window():
    present = np.zeros(100, bool)
    present[10] = True
    has = window_has_face(present)
    assert not has[:10].any()
    assert has[10:42].all()  # windows ending at 10..41 contain frame 10
    assert not has[42:].any()


@pytest.mark.parametrize("seq_len", [1, 2, 8, 16])
@pytest.mark.parametrize("stride", [1, 4, 32])
@pytest.mark.parametrize("num_frames", [1, 31, 100, 1000])
def test_dense_tiling_covers_every_computed_end_exactly_once(seq_len, stride, num_frames):
    seqs = list(sequences(num_frames, seq_len, stride))
    ends = np.concatenate(seqs)
    real = np.sort(ends[ends < num_frames])
    assert real.tolist() == clip_ends(num_frames, stride).tolist()
    for seq in seqs:
        assert len(seq) == seq_len
        assert (np.diff(seq) == 32).all()
        assert seq[0] < num_frames  # no sequence is all padding


def test_sequence_layout_matches_spec_one_based_numbering():
    # SPEC: end frames e = 32(L-1)+1 .. 32L (1-based) close the first block's sequences
    seqs = list(sequences(32 * 8 * 2, 8))
    last_ends_1based = sorted(int(s[-1]) + 1 for s in seqs[:32])
    assert last_ends_1based == list(range(32 * 7 + 1, 32 * 8 + 1))
    assert seqs[32][0] == 256  # second block starts 32L frames later


def test_stride_must_divide_32():
    with pytest.raises(ValueError):
        clip_ends(100, 3)


def test_to_frames_interpolates_and_holds_edges():
    ends = np.array([0, 4, 8])
    values = np.array([[0.0, 1.0], [0.4, np.nan], [0.8, 0.0]])
    out = to_frames(ends, values, 11)
    assert np.allclose(out[:9, 0], np.arange(9) / 10)
    assert np.allclose(out[8:, 0], 0.8)  # held after the last computed end
    assert np.allclose(out[:, 1], [1, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125, 0, 0, 0])


def test_to_frames_all_nan_dimension_stays_nan():
    out = to_frames(np.array([0, 5]), np.full((2, 1), np.nan), 6)
    assert np.isnan(out).all()
