"""Contracts and plumbing shared by the Early Help services: never a service's rules."""
