"""Discrete CQL (himari/agents/offline/cql.py, trained by the shared loop) cross-checked against the exact optimal Q
of a small MDP."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from himari.agents.offline.cql import CQLAlgorithm, CQLConfig, CQLPolicy, TwinQNet, cql_losses
from himari.agents.offline.loop import LoopConfig, fit

N_STATES, N_ACTIONS, GAMMA = 4, 3, 0.8


def small_mdp() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deterministic MDP: action 0 stays, 1 moves right, 2 moves left (clipped); random rewards; optimal Q by
    value iteration ``Q(s,a) = R(s,a) + γ max_a' Q(s',a')``."""
    rng = np.random.default_rng(7)
    nxt = np.zeros((N_STATES, N_ACTIONS), np.int64)
    for s in range(N_STATES):
        nxt[s] = [s, min(s + 1, N_STATES - 1), max(s - 1, 0)]
    reward = rng.uniform(0.0, 1.0, size=(N_STATES, N_ACTIONS))
    q = np.zeros((N_STATES, N_ACTIONS))
    for _ in range(500):
        q = reward + GAMMA * q.max(1)[nxt]
    return nxt, reward, q


def transitions(nxt: np.ndarray, reward: np.ndarray, actions: list[int], repeats: int) -> dict[str, np.ndarray]:
    eye = np.eye(N_STATES, dtype=np.float32)
    rows = [(s, a) for s in range(N_STATES) for a in actions] * repeats
    s = np.array([r[0] for r in rows])
    a = np.array([r[1] for r in rows])
    return {"states": eye[s], "actions": a, "rewards": reward[s, a].astype(np.float32),
            "next_states": eye[nxt[s, a]], "terminated": np.zeros(len(rows), bool)}


def fit_cql(data: dict[str, np.ndarray], alpha: float, steps: int = 600) -> CQLPolicy:
    cfg = CQLConfig(state_dim=N_STATES, hidden=(64,), lr=3e-3, gamma=GAMMA, alpha=alpha, tau=0.05, batch_size=128,
                    reward_scale=1.0, seed=0)
    policy = CQLPolicy(cfg)
    loop = LoopConfig(steps=steps, batch_size=cfg.batch_size, lr=cfg.lr, eval_every=steps, seed=0)
    fit(CQLAlgorithm(policy.net, data, cfg), loop)
    return policy


def test_cql_without_penalty_recovers_optimal_q() -> None:
    nxt, reward, q_star = small_mdp()
    policy = fit_cql(transitions(nxt, reward, [0, 1, 2], repeats=20), alpha=0.0)
    q = policy.q_values(np.eye(N_STATES, dtype=np.float32))
    assert np.abs(q - q_star).max() < 0.02 * np.abs(q_star).max()
    np.testing.assert_array_equal(q.argmax(1), q_star.argmax(1))


def test_conservative_penalty_pushes_down_unseen_actions() -> None:
    nxt, reward, _ = small_mdp()
    data = transitions(nxt, reward, [0, 1], repeats=30)  # action 2 never taken by the behaviour policy
    conservative = fit_cql(data, alpha=2.0, steps=300).q_values(np.eye(N_STATES, dtype=np.float32))
    assert (conservative[:, 2] < conservative[:, :2].min(1)).all()
    # the greedy policy stays on the data's support
    assert (conservative.argmax(1) != 2).all()


def test_cql_loss_matches_formula_on_a_batch() -> None:
    torch.manual_seed(0)
    cfg = CQLConfig(state_dim=3, hidden=(8,), alpha=0.7, gamma=0.9, reward_scale=2.0)
    net, target = TwinQNet(cfg), TwinQNet(cfg)
    batch = {"states": torch.randn(5, 3), "actions": torch.tensor([0, 1, 2, 1, 0]),
             "rewards": torch.randn(5), "next_states": torch.randn(5, 3),
             "terminated": torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0])}
    with torch.no_grad():
        loss, _ = cql_losses(net, target, batch, cfg)
    with torch.no_grad():
        q1, q2 = net(batch["states"])
        n1, n2 = net(batch["next_states"])
        t1, t2 = target(batch["next_states"])
    expected = 0.0
    for i in range(5):
        a_star = int(((n1[i] + n2[i]) / 2).argmax())
        y = 2.0 * batch["rewards"][i] + 0.9 * (1 - batch["terminated"][i]) * min(t1[i, a_star], t2[i, a_star])
        for q in (q1, q2):
            a = int(batch["actions"][i])
            expected += (0.5 * (q[i, a] - y) ** 2 + 0.7 * (torch.logsumexp(q[i], 0) - q[i, a])) / 5
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
