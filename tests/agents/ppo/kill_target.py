"""Training process that the resume test kills with SIGKILL (run as ``python -m tests.agents.ppo.kill_target``)."""

from __future__ import annotations

import sys
import time

from himari.agents.ppo.config import PPOConfig
from himari.agents.ppo.trainer import PPOTrainer
from tests.agents.ppo.helpers import env_for, small_policy

UPDATES = 12


def make_trainer(run_dir: str | None, seed: int = 11) -> PPOTrainer:
    env = env_for("lstm", num_envs=8, terminate_prob=0.02, episode_length=9)
    policy = small_policy("lstm", env, seed=seed)
    config = PPOConfig(total_steps=8 * 8 * UPDATES, n_steps=8, n_minibatches=2, n_epochs=2, checkpoint_every_updates=3)
    return PPOTrainer(policy, env, config, seed=seed, run_dir=run_dir, progress=False, tensorboard=False)


def main() -> None:
    trainer = make_trainer(sys.argv[1])
    trainer.callbacks.append(lambda _trainer, _metrics: time.sleep(0.12))  # slow enough to be killed mid-run
    trainer.train(resume="--resume" in sys.argv)


if __name__ == "__main__":
    main()
