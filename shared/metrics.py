"""Prometheus metrics of one service: what it consumed, published, wrote, failed at, and owes.

Each app has its own ``CollectorRegistry`` rather than the process-wide default, so many
apps can live in one process (the tests build dozens) without clashing names. Gauges that
need I/O (outbox backlog, consumer lag) are refreshed when ``GET /metrics`` is scraped.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Consumed-message outcomes, the values of the ``outcome`` label.
PROCESSED = "processed"
DUPLICATE = "duplicate"
DEAD_LETTERED = "dead_lettered"
FAILED_ATTEMPT = "failed_attempt"


class Metrics:
    """The instruments every service records; names are documented in the README."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.messages_consumed = Counter(
            "earlyhelp_messages_consumed_total",
            "Messages consumed, by topic and outcome: processed, duplicate (already processed,"
            " changed nothing), dead_lettered, failed_attempt (one failed try, to be retried).",
            ["topic", "outcome"],
            registry=self.registry,
        )
        self.handler_seconds = Histogram(
            "earlyhelp_handler_duration_seconds",
            "Time one handler call took, successful or not.",
            ["topic"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.messages_published = Counter(
            "earlyhelp_messages_published_total",
            "Records the outbox relay published and the broker acknowledged.",
            ["topic"],
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "earlyhelp_dead_letters_total",
            "Messages given up on and sent to <topic>.dlq, by original topic.",
            ["topic"],
            registry=self.registry,
        )
        self.errors = Counter(
            "earlyhelp_errors_total",
            "Errors by where they happened: handler, dead_letter, outbox_relay, http.",
            ["where"],
            registry=self.registry,
        )
        self.outbox_backlog = Gauge(
            "earlyhelp_outbox_backlog",
            "Records staged in the outbox and not yet published.",
            registry=self.registry,
        )
        self.consumer_lag = Gauge(
            "earlyhelp_consumer_lag",
            "Records on a partition this replica owns that it has not consumed yet.",
            ["topic", "partition"],
            registry=self.registry,
        )
        self.http_requests = Counter(
            "earlyhelp_http_requests_total",
            "HTTP requests answered, by method, route template and status code.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.http_seconds = Histogram(
            "earlyhelp_http_request_duration_seconds",
            "Time to answer an HTTP request, by method and route template.",
            ["method", "route"],
            registry=self.registry,
        )
        self.database_documents_written = Counter(
            "earlyhelp_database_documents_written_total",
            "Documents the database said it wrote, by operation: insert, update (upserts and"
            " findAndModify too), delete.",
            ["operation"],
            registry=self.registry,
        )
        self.database_transactions = Counter(
            "earlyhelp_database_transactions_total",
            "Transactions the database committed.",
            registry=self.registry,
        )
