"""Optional PPO training methods (the seeds' Part K), each off by default and switched on by a field of
:class:`himari.agents.ppo.config.PPOConfig` (configs in :mod:`.config`):

* :mod:`.curriculum`: K1 three-stage curriculum over episode difficulty;
* :mod:`.reptile`: K2 first-order meta-learning (Reptile) of the initial weights;
* :mod:`.augment`: K3 causal data augmentation and K8 rare-event injection (augmented markets, mixture env);
* :mod:`.aux`: K4 multi-task auxiliary heads on the policy's encoder;
* :mod:`.attacks`: K5 FGSM / PGD observation attacks; :mod:`.adversarial`: K6 adversarial training.

Trainer-side methods implement :class:`.base.TrainingMethod` (small hooks of :class:`PPOTrainer`).
"""
