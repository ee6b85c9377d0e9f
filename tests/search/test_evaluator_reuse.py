"""The Evaluator's exact reuses that make the acc table fast (issue 18): a stage's kept accumulators
under another ``fmt_y``, and a stage without overflow under the other overflow mode. Each must give
what a fresh Evaluator gives, bit for bit and stat for stat, and must actually skip the kernel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fxpsim.modelfile import load_model
from fxpsim.qformat import QFormat
from fxpsim.search import accumulator_search
from fxpsim.search.sweeps import set_data_format
from fxpsim.simulate import Evaluator, Simulator, profile
from fxpsim.train.data import load_dataset

CNN = Path(__file__).resolve().parents[2] / "models" / "digits-cnn.npz"


@pytest.fixture(scope="module")
def cnn():
    data = load_dataset("digits")
    sim = Simulator(load_model(CNN))
    ev = Evaluator(sim, data.x_train[:48], data.y_train[:48])
    return sim, ev, profile(sim, ev.x, prepared=True)


def _counting(sim, monkeypatch) -> list:
    """Every stage index whose kernel runs from now on."""
    runs = []
    real = sim.run_kernel

    def run_kernel(i, *args, **kwargs):
        runs.append(i)
        return real(i, *args, **kwargs)

    monkeypatch.setattr(sim, "run_kernel", run_kernel)
    return runs


def _assert_fresh(ev, config):
    """``ev``'s stage outputs and stats for ``config`` equal a fresh Evaluator's."""
    fresh = Evaluator(ev.sim, ev.x, ev.y, prepared=True, prefix_stats=ev.prefix_stats)
    for (ky, y, st), (fky, fy, fst) in zip(ev.stage_outputs(config), fresh.stage_outputs(config)):
        np.testing.assert_array_equal(ky, fky)
        np.testing.assert_array_equal(y, fy)
        assert st == fst


def test_a_stage_without_overflow_serves_the_other_mode(cnn, monkeypatch):
    sim, _, prof = cnn
    ev = Evaluator(sim, cnn[1].x, cnn[1].y, prepared=True, prefix_stats=True)
    wrap, _ = accumulator_search(ev, prof, 20, "act-w", "wrap")  # act-w: no overflow can happen
    assert all(st.overflow_count == 0 for _, _, st in ev.stage_outputs(wrap))
    runs = _counting(sim, monkeypatch)
    clip = wrap.with_all(overflow="clip")
    ev.stage_outputs(clip)
    assert runs == []
    _assert_fresh(ev, clip)


def test_a_stage_that_overflowed_runs_again_in_the_other_mode(cnn, monkeypatch):
    sim, _, prof = cnn
    ev = Evaluator(sim, cnn[1].x, cnn[1].y, prepared=True)
    wrap, _ = accumulator_search(ev, prof, 20, "act-y", "wrap")
    narrow = wrap.with_all(acc_bits=12)
    overflowed = [i for i, (_, _, st) in enumerate(ev.stage_outputs(narrow)) if st.overflow_count]
    assert overflowed  # 12 bits under act-y's 20-bit formats: some stage overflows
    runs = _counting(sim, monkeypatch)
    clip = narrow.with_all(overflow="clip")
    ev.stage_outputs(clip)
    assert overflowed[0] in runs
    _assert_fresh(ev, clip)


def test_a_new_output_format_requantizes_the_kept_accumulators(cnn, monkeypatch):
    sim, _, prof = cnn
    ev = Evaluator(sim, cnn[1].x, cnn[1].y, prepared=True)
    config, _ = accumulator_search(ev, prof, 16, "act-y", "clip")
    ev.stage_outputs(config)
    runs = _counting(sim, monkeypatch)
    fmt = config[2].fmt_x
    moved = set_data_format(config, 2, QFormat(fmt.int_bits + 1, fmt.frac_bits - 1))  # conv2's fmt_y too
    ev.stage_outputs(moved)
    assert runs == [2, 3]  # conv2 requantized from its kept accumulators; fc1 and fc2 run
    _assert_fresh(ev, moved)
