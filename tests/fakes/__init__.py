"""In-memory fakes of every service's ports, for fast tests of the use cases.

Each fake is held to its Mongo adapter by a contract suite under ``tests/contract/``: the
same tests run against both, so a fake cannot quietly differ from what it stands in for.
"""
