"""Fault campaigns: run the platform as separate processes, break it, and prove nothing is lost."""
