"""Thin tagged routers: each parses, calls the task service, wraps the answer in the envelope."""
