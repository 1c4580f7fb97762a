# The project's verbs. `make run` starts the platform; `make test` proves it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: kafka run simulate test lint typecheck unit bench campaign schemas rebuild-reporting dead-letters replay purge republish clean

# The dashboard's browser tests drive Debian's Chromium; installed once, only when missing.
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(INSTALLED): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(INSTALLED)

# The embedded broker is Apache Kafka on Java 17+, fetched once by Maven into .kafka/.
# Not needed when KAFKA_BOOTSTRAP_SERVERS names another broker.
EMBEDDED_KAFKA := $(if $(KAFKA_BOOTSTRAP_SERVERS),,kafka)

## kafka: check for Java 17+ and Maven, and fetch Apache Kafka into .kafka/ (once)
kafka: $(INSTALLED)
	@$(BIN)/python -m shared.embedded prepare

## run: the embedded broker and database (unless configured), and the four services
run: $(INSTALLED) $(EMBEDDED_KAFKA)
	$(BIN)/python -m services

## simulate: partner traffic on referral-submitted (make simulate RATE=5, or BACKLOG=1000; SEED=)
simulate: $(INSTALLED)
	$(BIN)/python -m simulator $(if $(BACKLOG),--backlog $(BACKLOG),--rate $(or $(RATE),1)) \
		$(if $(SEED),--seed $(SEED))

## test: lint, type-check, then every test against the real broker and database
test: $(INSTALLED) $(CHROMIUM) kafka lint typecheck
	$(BIN)/python -m pytest

$(CHROMIUM):
	$(SUDO) apt-get update
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(INSTALLED)
	$(BIN)/mypy

## unit: the fast tests only, no servers
unit: $(INSTALLED)
	$(BIN)/python -m pytest -m "not infra"

## bench: the ceilings, then issue 20's goals, each measured and met or not, also in BENCH_JSON
# BACKLOG: submissions at once; HISTORY: referrals stored before the pages are timed (0 skips).
BACKLOG ?= 20000
HISTORY ?= 200000
BENCH_JSON ?= data/bench.json
bench: $(INSTALLED) kafka
	$(BIN)/python -m benchmarks.pipeline --backlog $(BACKLOG) --history $(HISTORY) --json $(BENCH_JSON)

## campaign: kill every service twice and restart the database under load; prove nothing is lost
campaign: $(INSTALLED) kafka
	$(BIN)/python -m resilience.campaign --submissions 2000 --kills-per-service 2 --restart-database

## rebuild-reporting: drop reporting's read models and replay the retained events
rebuild-reporting: $(INSTALLED)
	$(BIN)/python -m services.reporting.rebuild

# The operations commands open dead letters with the services' key: `make run`'s, unless set.
DEAD_LETTER_KEY := $(if $(EARLYHELP_DEAD_LETTER_KEY)$(EARLYHELP_DEAD_LETTER_KEY_FILE),,EARLYHELP_DEAD_LETTER_KEY_FILE=data/dead-letter-key)

## dead-letters: the newest messages the services gave up on (never what they said)
dead-letters: $(INSTALLED)
	$(DEAD_LETTER_KEY) $(BIN)/python -m shared.operations dead-letters

## replay: publish dead letters again after a fix (make replay ID='group:topic:partition:offset')
replay: $(INSTALLED)
	$(DEAD_LETTER_KEY) $(BIN)/python -m shared.operations replay "$(ID)"

## purge: delete dead letters no longer wanted (make purge ID='group:topic:partition:offset')
purge: $(INSTALLED)
	$(DEAD_LETTER_KEY) $(BIN)/python -m shared.operations purge "$(ID)"

## republish: send the outboxes' records again (disaster recovery: a broker that lost its data)
republish: $(INSTALLED)
	$(BIN)/python -m shared.operations republish

## schemas: refresh the checked-in event schemas after an additive change, and the OpenAPI documents
schemas: $(INSTALLED)
	$(BIN)/python -m shared.contracts --write
	$(BIN)/python -m services.openapi --write

clean:
	rm -rf $(VENV) .kafka .mypy_cache .ruff_cache .pytest_cache
