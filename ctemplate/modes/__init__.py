"""Modes that drive the loop differently: watch, exec and de-duplication."""
