"""Student-t HMM: parameter recovery from a known model, filter vs brute force, persistence, hmmlearn baseline."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from himari.regime.student_t_hmm import StudentTHMM, map_states_by_means, student_t_logpdf


def _true_model() -> StudentTHMM:
    means = np.array([[-1.0, 0.0], [0.0, 1.5], [1.5, 0.0], [2.5, -1.0]])
    covs = np.array([np.eye(2) * s for s in (0.1, 0.15, 0.2, 0.3)])
    transmat = np.full((4, 4), 0.01)
    np.fill_diagonal(transmat, 0.97)
    return StudentTHMM(means, covs, np.array([4.0, 6.0, 5.0, 3.0]), transmat, np.full(4, 0.25))


def test_logpdf_matches_scipy() -> None:
    from scipy import stats

    x = np.random.default_rng(0).standard_normal((20, 2))
    cov = np.array([[1.0, 0.3], [0.3, 2.0]])
    got, _ = student_t_logpdf(x, np.array([0.1, -0.2]), cov, 4.5)
    ref = stats.multivariate_t(loc=[0.1, -0.2], shape=cov, df=4.5).logpdf(x)
    np.testing.assert_allclose(got, ref, rtol=1e-10)


def test_forward_filter_matches_enumeration() -> None:
    model = _true_model()
    _, x = model.sample(6, seed=1)
    res = model.filter(x)
    logb = model.emission_logprob(x)
    # brute force: P(s_t | x_<=t) by summing over all state paths of length t+1
    for t in range(6):
        joint = np.zeros(4)
        total = 0.0
        for path in itertools.product(range(4), repeat=t + 1):
            p = model.startprob[path[0]] * np.exp(logb[0, path[0]])
            for i in range(1, t + 1):
                p *= model.transmat[path[i - 1], path[i]] * np.exp(logb[i, path[i]])
            joint[path[-1]] += p
            total += p
        np.testing.assert_allclose(res.posterior[t], joint / total, rtol=1e-9)
        if t == 5:
            assert res.loglik == pytest.approx(np.log(total), rel=1e-9)


def test_forward_backward_matches_enumeration_with_gap() -> None:
    from himari.regime.student_t_hmm import forward_backward

    model = _true_model()
    _, x = model.sample(6, seed=8)
    x[2] = np.nan  # an unobserved row
    seg = np.array([False, False, False, False, True, False])  # a new segment starts at row 4
    logb = model.emission_logprob(x)
    obs = np.isfinite(x).all(axis=1)
    gamma, xi_sum, _, ll = forward_backward(logb, obs, model.transmat, model.startprob, seg)
    joint = np.zeros((6, 4))
    xi = np.zeros((4, 4))
    total = 0.0
    for path in itertools.product(range(4), repeat=6):
        p = 1.0
        for t in range(6):
            trans = model.startprob[path[t]] if (t == 0 or seg[t]) else model.transmat[path[t - 1], path[t]]
            p *= trans * (np.exp(logb[t, path[t]]) if obs[t] else 1.0)
        total += p
        for t in range(6):
            joint[t, path[t]] += p
        for t in range(5):
            if not seg[t + 1]:
                xi[path[t], path[t + 1]] += p
    np.testing.assert_allclose(gamma, joint / total, rtol=1e-8)
    np.testing.assert_allclose(xi_sum, xi / total, rtol=1e-8, atol=1e-12)
    assert ll == pytest.approx(np.log(total), rel=1e-10)


def test_em_recovers_known_parameters() -> None:
    truth = _true_model()
    states, x = truth.sample(4000, seed=2)
    # start from labels with 30 % noise so EM has work to do
    rng = np.random.default_rng(3)
    noisy = np.where(rng.random(len(states)) < 0.3, rng.integers(0, 4, len(states)), states)
    model = StudentTHMM.fit_supervised(x, noisy, dof=None)
    hist = model.fit_em(x, n_iter=40)
    assert all(b >= a - 1e-6 * abs(a) for a, b in itertools.pairwise(hist))  # EM never decreases the likelihood
    np.testing.assert_allclose(model.means, truth.means, atol=0.08)
    np.testing.assert_allclose(np.diagonal(model.transmat), 0.97, atol=0.02)
    assert np.all(np.abs(np.log(model.dofs / truth.dofs)) < np.log(2.0))
    decoded = model.filter(x).posterior.argmax(axis=1)
    assert (decoded == states).mean() > 0.9


def test_supervised_fit_and_json_round_trip(tmp_path) -> None:
    truth = _true_model()
    states, x = truth.sample(3000, seed=4)
    model = StudentTHMM.fit_supervised(x, states, dof=5.0)
    np.testing.assert_allclose(model.means, truth.means, atol=0.08)
    assert np.all(model.dofs == 5.0)
    path = model.save(tmp_path / "hmm.json")
    back = StudentTHMM.load(path)
    np.testing.assert_array_equal(back.filter(x).posterior, model.filter(x).posterior)


def test_filter_truncation_invariance_and_gaps() -> None:
    model = _true_model()
    _, x = model.sample(300, seed=5)
    x[40:45] = np.nan  # missing observations: prediction-only steps
    seg = np.zeros(300, dtype=bool)
    seg[150] = True
    full = model.filter(x, seg).posterior
    for cut in (1, 41, 46, 150, 151, 299):
        np.testing.assert_array_equal(model.filter(x[:cut], seg[:cut]).posterior, full[:cut])
    np.testing.assert_allclose(full.sum(axis=1), 1.0)


def test_state_mapping_is_deterministic() -> None:
    means = np.array([[2.0, 0.1, -2.0], [-1.0, 0.0, 0.0], [-0.5, 1.5, 0.3], [1.5, 0.2, 0.1]])
    assert map_states_by_means(means).tolist() == [3, 0, 1, 2]


def test_student_t_beats_gaussian_hmm_on_heavy_tails() -> None:
    """Held-out log-likelihood vs hmmlearn's GaussianHMM on data from a Student-t HMM (both fitted by EM)."""
    hmmlearn = pytest.importorskip("hmmlearn.hmm")
    truth = _true_model()
    _, x = truth.sample(3000, seed=6)
    train, test = x[:2000], x[2000:]
    gauss = hmmlearn.GaussianHMM(4, covariance_type="full", n_iter=50, random_state=0).fit(train)
    order = np.argsort(gauss.means_[:, 0])
    labels = np.argsort(order)[gauss.predict(train)]  # label states by the Gaussian fit (same start information)
    model = StudentTHMM.fit_supervised(train, labels, dof=None)
    model.fit_em(train, n_iter=30)
    assert model.filter(test).loglik > gauss.score(test)
