"""Layers shipped with the core: only the in-memory one (brokers have their own)."""
