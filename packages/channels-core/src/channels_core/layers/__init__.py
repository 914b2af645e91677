"""Layers shipped with the core (only the in-memory one; brokers live in their own distributions)."""
