"""Allocation service: one family, one worker, within caseload caps."""
