"""Training runs: the one PPO run assembly and the offline trainers, from prepared data to a saved bundle."""
