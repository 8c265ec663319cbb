# The two commands of the quick start are `make demo` and `make test`.
SHELL := /bin/bash
GO ?= go
GO_MIN := 1.26
STATICCHECK_VERSION := v0.8.2
# Run again under the race detector by `make test`: the engine and SDK, and the
# control plane's concurrent parts (API, domains, worker, end-to-end).
RACE_PACKAGES := ./internal/enforcement/... ./sdk/go/... ./internal/api/... ./internal/customers/... ./internal/usage/... \
	./internal/worker/... ./cmd/worker/... ./e2e/...
# The Redocly CLI that last linted internal/api/openapi.json clean (0 errors).
REDOCLY_VERSION ?= 2.77.0

.PHONY: all demo test test-short bench fuzz lint openapi-lint check-go services build tidy-check screenshots

all: test

check-go:
	@command -v $(GO) >/dev/null 2>&1 || { echo "make: Go $(GO_MIN)+ is required: install it from https://go.dev/dl and put it on PATH" >&2; exit 1; }
	@v=$$($(GO) env GOVERSION | sed 's/^go//'); \
	if [ "$$(printf '%s\n%s\n' "$(GO_MIN)" "$$v" | sort -V | head -n1)" != "$(GO_MIN)" ]; then \
	  echo "make: Go $(GO_MIN)+ is required, found $$v" >&2; exit 1; fi

services:
	@scripts/services.sh >/dev/null

build: check-go
	$(GO) build -o bin/limitr ./cmd/limitr

## demo: the AI-product quick start in local mode, then the same product in cloud mode:
## Postgres and Redis, `limitr dev`, a tenant, the policy published, a cloud-mode client
## that sees a changed limit pushed to it, the server's aggregated usage, then billing:
## an upcoming invoice and a month on a test clock ending in a finalized invoice, then alerts:
## a usage rule that reaches a local webhook receiver once per threshold (scripts/demo.sh)
demo: check-go
	$(GO) run ./examples/quickstart
	@echo
	GO=$(GO) scripts/demo.sh

## test: every test, against real Postgres and Redis on 127.0.0.1
test: check-go
	@env_out=$$(scripts/services.sh) || { echo "make: PostgreSQL and Redis could not be started (see above)" >&2; exit 1; }; \
	eval "$$env_out"; \
	$(GO) test -count=1 -timeout 20m ./... && \
	$(GO) test -count=1 -race -timeout 15m $(RACE_PACKAGES) && \
	$(GO) run ./cmd/limitr test examples/scenarios

test-short: check-go
	$(GO) test -short ./...

## bench: hot-path benchmarks with the baseline in the same run
bench: check-go
	$(GO) test -run '^$$' -bench . -benchmem -count 3 ./sdk/go/ ./internal/enforcement/

fuzz: check-go
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime 30s ./internal/quantity/
	$(GO) test -run '^$$' -fuzz FuzzParseSchedule -fuzztime 30s ./internal/period/
	$(GO) test -run '^$$' -fuzz FuzzDecodeJSON -fuzztime 20s ./internal/policies/doctree/
	$(GO) test -run '^$$' -fuzz FuzzDecodeYAML -fuzztime 20s ./internal/policies/doctree/
	$(GO) test -run '^$$' -fuzz FuzzDecodeTOML -fuzztime 20s ./internal/policies/doctree/
	$(GO) test -run '^$$' -fuzz FuzzLoad -fuzztime 30s ./internal/policies/
	$(GO) test -run '^$$' -fuzz FuzzCompile -fuzztime 30s ./internal/policies/expr/
	$(GO) test -run '^$$' -fuzz FuzzCurves -fuzztime 30s ./internal/billing/rating/
	$(GO) test -run '^$$' -fuzz FuzzRound -fuzztime 20s ./internal/billing/money/
	$(GO) test -run '^$$' -fuzz FuzzMinorUnits -fuzztime 30s ./internal/billing/stripe/
	$(GO) test -run '^$$' -fuzz FuzzParseKeyring -fuzztime 20s ./internal/secrets/
	$(GO) test -run '^$$' -fuzz FuzzOpen -fuzztime 20s ./internal/secrets/
	$(GO) test -run '^$$' -fuzz FuzzDecodeBatch -fuzztime 30s ./internal/usage/
	$(GO) test -run '^$$' -fuzz FuzzDecodeFast -fuzztime 30s ./internal/usage/
	$(GO) test -run '^$$' -fuzz FuzzUsageBody -fuzztime 20s ./internal/api/
	$(GO) test -run '^$$' -fuzz FuzzPreviewCSV -fuzztime 30s ./cmd/limitr/

lint: check-go
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: files above need formatting" >&2; exit 1; }
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...

## screenshots: PNGs of the dashboard's main pages in docs/screenshots/: a seeded dashboard served
## in process, captured by headless Chromium (scripts/screenshots; scripts/chromium.sh finds or installs it)
screenshots: check-go
	@env_out=$$(scripts/services.sh) || { echo "make: PostgreSQL and Redis could not be started (see above)" >&2; exit 1; }; \
	eval "$$env_out"; \
	$(GO) run ./scripts/screenshots -out docs/screenshots

## openapi-lint: lint the API's OpenAPI document with Redocly (needs Node.js and npm)
openapi-lint:
	@command -v npx >/dev/null 2>&1 || { echo "make: npx is required: install Node.js (with npm)" >&2; exit 1; }
	npx --yes @redocly/cli@$(REDOCLY_VERSION) lint internal/api/openapi.json

tidy-check: check-go
	@cp go.mod /tmp/go.mod.bak; cp go.sum /tmp/go.sum.bak; $(GO) mod tidy; \
	if ! git diff --quiet -- go.mod go.sum; then git diff -- go.mod go.sum; cp /tmp/go.mod.bak go.mod; cp /tmp/go.sum.bak go.sum; echo "go mod tidy changes go.mod/go.sum" >&2; exit 1; fi
