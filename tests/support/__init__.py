"""Helpers the tests share (never shipped: the product package does not import them)."""
