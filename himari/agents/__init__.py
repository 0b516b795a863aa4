"""Policies (L2 tactical and L3 sizing) and their trainers: PPO family, offline RL and sequence models."""
