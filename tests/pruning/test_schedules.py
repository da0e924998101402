"""Schedules: eq. 5.1 values, update points, graph-mode evaluation, config, errors."""

import keras
import pytest
from keras import ops

from tfcompress.pruning import ConstantSparsity
from tfcompress.pruning import PolynomialDecay


def test_polynomial_decay_is_eq_5_1():
    s = PolynomialDecay(0.1, 0.9, begin_step=10, end_step=110, power=3, frequency=10)
    for c in (10, 35, 60, 110, 500):
        frac = min(max((c - 10) / 100, 0), 1)
        expected = 0.9 + (0.1 - 0.9) * (1 - frac) ** 3  # S_c = S_t + (S_i - S_t)(1 - (c-c0)/n)^3
        assert s(c)[1] == pytest.approx(expected)
    assert s(0)[1] == pytest.approx(0.1)


def test_update_points_and_due():
    s = PolynomialDecay(0.0, 0.8, begin_step=4, end_step=30, frequency=8)
    updates = [c for c in range(60) if s(c)[0]]
    # begin, every 8 after it, and end_step itself so the final sparsity is reached
    assert updates == [4, 12, 20, 28, 30]
    assert s.update_due(-1, 4) and not s.update_due(4, 11) and s.update_due(4, 12)
    # skipped-over point (steps_per_execution): due at the next boundary
    assert s.update_due(12, 21)
    # frozen after the end unless keep_updating (DCIL)
    assert not s.update_due(30, 100)
    # (after the end, keep_updating goes on at begin + k*frequency: 36, 44, ...)
    assert not s.update_due(30, 35, keep_updating=True) and s.update_due(30, 36, keep_updating=True)
    assert not s.update_due(36, 43, keep_updating=True) and s.update_due(36, 44, keep_updating=True)
    # frequency override
    assert s.update_due(4, 6, frequency=2)


@pytest.mark.parametrize("keep_updating", [False, True])
@pytest.mark.parametrize("frequency", [None, 3])
def test_next_update_point_agrees_with_update_due(keep_updating, frequency):
    schedules = (
        PolynomialDecay(0.0, 0.8, begin_step=4, end_step=30, frequency=8),
        PolynomialDecay(0.0, 0.8, begin_step=0, end_step=32, frequency=8),
        ConstantSparsity(0.5, begin_step=2, frequency=5),
        ConstantSparsity(0.5, begin_step=3, end_step=3, frequency=4),
    )
    for s in schedules:
        for prev in range(-1, 60):
            due = [c for c in range(prev, 120)
                   if s.update_due(prev, c, keep_updating, frequency)]
            expected = due[0] if due else None
            got = s.next_update_point(prev, keep_updating, frequency)
            assert got == expected or (expected is None and got >= 120), (s, prev)


def test_constant_sparsity_never_ending():
    s = ConstantSparsity(0.5, begin_step=2, frequency=3)
    assert [c for c in range(12) if s(c)[0]] == [2, 5, 8, 11]
    assert s(7) == (False, 0.5)


def test_graph_mode_matches_python():
    s = PolynomialDecay(0.0, 0.9, begin_step=0, end_step=50, frequency=16)
    for c in (0, 16, 17, 40, 50, 64):
        u, sp = s(ops.convert_to_tensor(c, dtype="int32"))
        assert bool(ops.convert_to_numpy(u)) == s(c)[0]
        assert float(ops.convert_to_numpy(sp)) == pytest.approx(s(c)[1], rel=1e-6)


def test_schedule_config_round_trip():
    for s in (
        ConstantSparsity(0.3, begin_step=1, end_step=9, frequency=2),
        PolynomialDecay(0.1, 0.7, begin_step=0, end_step=99, power=2, frequency=5),
    ):
        again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(s))
        assert again == s and again.get_config() == s.get_config()


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: ConstantSparsity(1.5), "sparsity must be in [0, 1); received: sparsity=1.5"),
        (lambda: ConstantSparsity(-0.1), "sparsity=-0.1"),
        (lambda: ConstantSparsity(0.5, frequency=0), "frequency must be >= 1; received: frequency=0"),
        (lambda: ConstantSparsity(0.5, begin_step=-2), "begin_step=-2"),
        (lambda: ConstantSparsity(0.5, begin_step=5, end_step=3), "end_step=3"),
        (lambda: PolynomialDecay(0.0, 1.0, 0, 10), "final_sparsity=1.0"),
        (lambda: PolynomialDecay(0.0, 0.5, 10, 10), "end_step=10"),
        (lambda: PolynomialDecay(0.0, 0.5, 0, 10, power=0), "power=0"),
    ],
)
def test_bad_arguments(make, message):
    with pytest.raises(ValueError) as err:
        make()
    assert message in str(err.value)
