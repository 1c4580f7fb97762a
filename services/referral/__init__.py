"""Referral service: the single front door for every referral route."""
