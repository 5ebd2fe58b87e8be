import numpy as np
import pytest
from scipy.ndimage import uniform_filter1d

from avemo.smoothing import AROUSAL_WINDOW, VALENCE_WINDOW, WINDOWS, smooth


def trace(n, seed):
    rng = np.random.default_rng(seed)
    return np.tanh(np.cumsum(rng.normal(0, 0.1, (n, 2)), axis=0))


def test_windows_are_the_references():
    assert (VALENCE_WINDOW, AROUSAL_WINDOW) == (20, 50) and WINDOWS == (20, 50)


def test_without_nan_it_is_the_reference_filter_exactly():
    values = trace(400, 0)
    out = smooth(values)
    assert np.array_equal(out[:, 0], uniform_filter1d(values[:, 0], 20, mode="constant"))
    assert np.array_equal(out[:, 1], uniform_filter1d(values[:, 1], 50, mode="constant"))
    assert not np.shares_memory(out, values)


def test_hand_computed_box_filter_counts_zeros_outside_the_video():
    # width 3, centred: (x[i-1] + x[i] + x[i+1]) / 3 with zeros outside
    out = smooth(np.array([[0.0], [3.0], [0.0], [0.0]]), (3,))
    assert out[:, 0].tolist() == pytest.approx([1.0, 1.0, 1.0, 0.0])
    # an even width 2 covers frames i-1 and i (scipy's centring)
    out = smooth(np.array([[2.0], [4.0], [6.0]]), (2,))
    assert out[:, 0].tolist() == pytest.approx([1.0, 3.0, 5.0])


def test_nan_frames_stay_nan_and_are_left_out_of_their_neighbours():
    out = smooth(np.array([[1.0], [np.nan], [1.0]]), (3,))
    # frame 0 averages the zero before the video and itself; frame 1 has no prediction
    assert out[[0, 2], 0] == pytest.approx([0.5, 0.5]) and np.isnan(out[1, 0])
    values = np.ones((200, 2))
    values[90:110] = np.nan  # no face for 20 frames
    out = smooth(values)
    assert np.isnan(out[90:110]).all()
    interior = np.r_[50:90, 110:150]  # no edge of the video within reach
    assert np.allclose(out[interior], 1.0)  # zero-filling would pull these towards 0


def test_nan_aware_result_is_the_mean_of_the_valid_values_in_each_window():
    values = trace(300, 1)
    values[np.random.default_rng(2).random(300) < 0.2, 0] = np.nan
    out = smooth(values)
    for i in (40, 150, 260):
        window = values[i - 10 : i + 10, 0]
        if not np.isnan(values[i, 0]):
            assert out[i, 0] == pytest.approx(np.nanmean(window))
    assert np.array_equal(np.isnan(out[:, 0]), np.isnan(values[:, 0]))
    assert np.array_equal(out[:, 1], uniform_filter1d(values[:, 1], 50, mode="constant"))


def test_width_one_empty_input_and_bad_shapes():
    values = trace(30, 3)
    assert np.array_equal(smooth(values, (1, 1)), values)
    assert smooth(np.empty((0, 2))).shape == (0, 2)
    with pytest.raises(ValueError, match="N x 2"):
        smooth(values[:, 0])
    with pytest.raises(ValueError, match=">= 1"):
        smooth(values, (0, 5))
