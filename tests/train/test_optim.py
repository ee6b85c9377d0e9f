"""Optimizers and schedules against hand-computed updates of Algorithms 8.1-8.7."""

import math

import numpy as np
import pytest

from fxpsim import FxpsimError
from fxpsim.train.optim import (OPTIMIZERS, AdaGrad, Adam, Momentum, Nesterov, Optimizer, RMSProp, SGD,
                                make_optimizer)
from fxpsim.train.schedules import Schedule, constant, exponential, inverse_time, step_decay

G1 = np.array([0.5, -2.0, 0.0])
G2 = np.array([-1.0, 1.0, 4.0])
THETA0 = np.array([1.0, 2.0, -3.0])


def run(opt_factory, grads):
    theta = THETA0.copy()
    opt = opt_factory([theta])
    for g in grads:
        opt.lookahead()
        opt.step([g])
    return theta


def test_sgd_8_1_by_hand():
    # theta - eps * g, twice with eps = 0.1
    theta = run(lambda p: SGD(p, lr=0.1), [G1, G2])
    np.testing.assert_allclose(theta, [1.0 - 0.05 + 0.1, 2.0 + 0.2 - 0.1, -3.0 - 0.4], rtol=0, atol=1e-15)


def test_momentum_8_2_by_hand():
    # v1 = -eps g1; theta1 = theta0 + v1; v2 = alpha v1 - eps g2; theta2 = theta1 + v2
    eps, a = 0.1, 0.9
    v1 = -eps * G1
    v2 = a * v1 - eps * G2
    theta = run(lambda p: Momentum(p, lr=eps, momentum=a), [G1, G2])
    np.testing.assert_allclose(theta, THETA0 + v1 + v2, rtol=0, atol=1e-15)
    # concrete numbers for the first coordinate: v1 = -0.05, v2 = -0.045 + 0.1 = 0.055
    assert theta[0] == pytest.approx(1.0 - 0.05 + 0.055, abs=1e-15)


def test_nesterov_8_3_gradient_at_interim_point():
    # f(theta) = 0.5 * c * theta^2 per coordinate, gradient c * theta, taken at theta + alpha v
    c = np.array([1.0, 3.0, 0.5])
    eps, a = 0.1, 0.9
    theta = THETA0.copy()
    opt = Nesterov([theta], lr=eps, momentum=a)
    seen = []
    for _ in range(3):
        opt.lookahead()
        seen.append(theta.copy())
        opt.step([c * theta])
    # by hand
    th, v = THETA0.copy(), np.zeros(3)
    for k in range(3):
        interim = th + a * v
        np.testing.assert_allclose(seen[k], interim, rtol=0, atol=1e-15)
        v = a * v - eps * c * interim
        th = th + v
    np.testing.assert_allclose(theta, th, rtol=0, atol=1e-15)
    # first step: v = 0 so interim = theta0; theta1 = theta0 - eps c theta0
    assert seen[0][1] == 2.0


def test_nesterov_step_without_lookahead_is_an_error():
    opt = Nesterov([THETA0.copy()], lr=0.1)
    with pytest.raises(FxpsimError, match="lookahead"):
        opt.step([G1])


def test_adagrad_8_4_by_hand():
    eps, d = 0.1, 1e-7
    r1 = G1 * G1
    th1 = THETA0 - eps / (d + np.sqrt(r1)) * G1
    r2 = r1 + G2 * G2
    th2 = th1 - eps / (d + np.sqrt(r2)) * G2
    theta = run(lambda p: AdaGrad(p, lr=eps, delta=d), [G1, G2])
    np.testing.assert_allclose(theta, th2, rtol=1e-15, atol=1e-15)
    # coordinate 0, step 1: 1 - 0.1 * 0.5 / (1e-7 + 0.5); zero gradient leaves coordinate 2 alone
    th = run(lambda p: AdaGrad(p, lr=eps, delta=d), [G1])
    assert th[0] == pytest.approx(1 - 0.1 * 0.5 / (0.5 + 1e-7), abs=1e-15)
    assert th[2] == -3.0


def test_rmsprop_8_5_delta_under_the_root():
    eps, rho, d = 0.01, 0.9, 1e-6
    r1 = 0.1 * G1 * G1
    th1 = THETA0 - eps / np.sqrt(d + r1) * G1
    r2 = rho * r1 + 0.1 * G2 * G2
    th2 = th1 - eps / np.sqrt(d + r2) * G2
    theta = run(lambda p: RMSProp(p, lr=eps, rho=rho, delta=d), [G1, G2])
    np.testing.assert_allclose(theta, th2, rtol=1e-14, atol=1e-15)
    # concrete: r1[1] = 0.1 * 4 = 0.4, step = 0.01 * -2 / sqrt(0.400001)
    th = run(lambda p: RMSProp(p, lr=eps, rho=rho, delta=d), [G1])
    assert th[1] == pytest.approx(2.0 + 0.02 / math.sqrt(0.400001), abs=1e-15)


def test_rmsprop_nesterov_8_6_by_hand():
    c = np.array([1.0, 3.0, 0.5])
    eps, rho, a, d = 0.01, 0.9, 0.8, 1e-6
    theta = THETA0.copy()
    opt = RMSProp([theta], lr=eps, rho=rho, delta=d, momentum=a, nesterov=True)
    assert opt.name == "rmsprop-nesterov"
    for _ in range(3):
        opt.lookahead()
        opt.step([c * theta])
    th, v, r = THETA0.copy(), np.zeros(3), np.zeros(3)
    for _ in range(3):
        interim = th + a * v
        g = c * interim
        r = rho * r + (1 - rho) * g * g
        v = a * v - eps / np.sqrt(d + r) * g
        th = th + v
    np.testing.assert_allclose(theta, th, rtol=1e-14, atol=1e-15)


def test_adam_8_7_bias_correction_by_hand():
    eps, r1_, r2_, d = 0.001, 0.9, 0.999, 1e-8
    th, s, r = THETA0.copy(), np.zeros(3), np.zeros(3)
    for t, g in enumerate([G1, G2], start=1):
        s = r1_ * s + (1 - r1_) * g
        r = r2_ * r + (1 - r2_) * g * g
        s_hat, r_hat = s / (1 - r1_ ** t), r / (1 - r2_ ** t)
        th = th - eps * s_hat / (np.sqrt(r_hat) + d)
    theta = run(lambda p: Adam(p, lr=eps, rho1=r1_, rho2=r2_, delta=d), [G1, G2])
    np.testing.assert_allclose(theta, th, rtol=1e-14, atol=1e-15)
    # with bias correction the first step is eps * sign(g) (up to delta) for any gradient size
    th1 = run(lambda p: Adam(p, lr=eps), [G1])
    np.testing.assert_allclose(th1 - THETA0, [-eps, eps, 0.0], rtol=1e-7, atol=1e-12)


def test_l2_and_l1_regularisation_gradient_only_on_flagged_params():
    w, b = np.array([1.0, -2.0]), np.array([3.0])
    opt = SGD([w, b], lr=0.1, l2=0.5, l1=0.2, decay=[True, False])
    assert opt.penalty() == pytest.approx(0.5 * (1 + 4) + 0.2 * 3)
    opt.step([np.zeros(2), np.zeros(1)])
    # g = 2 * l2 * w + l1 * sign(w) = [1 + 0.2, -2 - 0.2]
    np.testing.assert_allclose(w, [1.0 - 0.12, -2.0 + 0.22], atol=1e-15)
    assert b[0] == 3.0


def test_updates_are_in_place_and_keep_dtype():
    p = np.ones(4, dtype=np.float32)
    ref = p
    opt = make_optimizer("adam", [p], 0.01)
    opt.step([np.full(4, 0.5, np.float32)])
    assert ref is opt.params[0] and p.dtype == np.float32 and np.all(p < 1)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_minimises_a_quadratic(name):
    c = np.array([1.0, 10.0])
    theta = np.array([3.0, -2.0])
    lr = {"sgd": 0.05, "momentum": 0.02, "nesterov": 0.02, "adagrad": 0.5}.get(name, 0.05)
    opt = make_optimizer(name, [theta], lr)
    for _ in range(500):
        opt.lookahead()
        opt.step([c * theta])
    assert np.abs(theta).max() < 0.05, (name, theta)


def test_bad_names_and_values():
    with pytest.raises(FxpsimError, match="unknown optimizer 'adamw'.*sgd"):
        make_optimizer("adamw", [np.ones(1)], 0.1)
    for lr in (0, -1, float("nan"), "x"):
        with pytest.raises(FxpsimError, match="learning rate"):
            SGD([np.ones(1)], lr=lr)
    with pytest.raises(FxpsimError, match="momentum"):
        Momentum([np.ones(1)], momentum=1.0)
    with pytest.raises(FxpsimError, match="nesterov"):
        Optimizer([np.ones(1)], 0.1, nesterov=True)
    with pytest.raises(FxpsimError, match="2 gradients for 1"):
        SGD([np.ones(1)]).step([np.ones(1), np.ones(1)])


def test_schedules():
    assert [constant(0.1)(t) for t in (0, 5, 50)] == [0.1, 0.1, 0.1]
    s = step_decay(0.1, every=2, factor=0.5)
    assert [s(t) for t in range(6)] == [0.1, 0.1, 0.05, 0.05, 0.025, 0.025]
    e = exponential(0.1, k=0.5)
    assert e(0) == 0.1 and e(2) == pytest.approx(0.1 * math.exp(-1.0), rel=1e-15)
    i = inverse_time(0.1, k=0.5)
    assert i(0) == 0.1 and i(2) == pytest.approx(0.05, rel=1e-15) and i(6) == pytest.approx(0.025, rel=1e-15)
    assert Schedule("1/t", 0.2, k=1.0)(1) == pytest.approx(0.1)
    assert step_decay(1.0, every=3).to_dict() == {"kind": "step", "lr0": 1.0, "every": 3, "factor": 0.5}
    with pytest.raises(FxpsimError, match="unknown learning-rate schedule 'cosine'"):
        Schedule("cosine", 0.1)
    with pytest.raises(FxpsimError, match="every"):
        step_decay(0.1, every=0)
