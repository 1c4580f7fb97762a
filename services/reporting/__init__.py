"""Reporting service: read models projected from the streams."""
