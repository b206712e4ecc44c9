"""Synthetic data, the network, training and export (needs the ``train`` extra: torch, pybullet)."""
