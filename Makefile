# IoTD build and test entry points. `make test` is the whole suite: what CI runs (.ci/run).
GO      ?= go
PKGS    := ./...
FUZZTIME ?= 10s
COVER_MIN ?= 90

.PHONY: all build test unit fuzz fuzz-long cover-check idlemem-long bench-smoke bench-compare crash-long recovery-long soak-long bench-store bench-tls vet fmt clean

all: build

build:
	$(GO) build -o bin/iotd ./cmd/iotd

## test: vet, unit and integration tests under -race with per-package coverage, the coverage
## floor for internal packages, a short fuzz run of every fuzz target, and bench-smoke (the load
## tool and a seconds-long comparison run, idle connections included).
test: vet unit cover-check fuzz bench-smoke
	@awk '/^ok /{p++} /^FAIL/{f++} END{printf "packages: %d passed, %d failed\n", p, f+0}' coverage/test.txt

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { echo "gofmt needed:"; gofmt -l .; exit 1; }
	$(GO) vet $(PKGS)

unit:
	@mkdir -p coverage
	$(GO) test -race -count=1 -timeout 8m -cover -coverprofile=coverage/cover.out $(PKGS) 2>&1 | tee coverage/test.txt

## cover-check: every internal package with tests must be above COVER_MIN percent.
cover-check:
	@awk -v min=$(COVER_MIN) '/^ok/ && /internal\// && /coverage:/ { \
		for (i = 1; i <= NF; i++) if ($$i == "coverage:") { pct = $$(i+1); sub("%", "", pct); \
			printf "coverage %-45s %6s%%\n", $$2, pct; if (pct + 0 < min) { bad = bad " " $$2 } } } \
		END { if (bad != "") { print "below " min "%:" bad; exit 1 } }' coverage/test.txt

## fuzz: each fuzz target for FUZZTIME (short in CI; `make fuzz-long` for five minutes each).
## make test skips the store backends' record decoders (FUZZ_SKIP): a fuzzing build instruments
## every dependency, and Pebble's and SQLite's take over a minute each to build on a fresh CI
## machine. Their seed corpora still run as unit tests, and fuzz-long fuzzes them.
FUZZ_SKIP ?= internal/store/pebble internal/store/sqlite
fuzz:
	@set -e; for f in $$(grep -rl --include='*_test.go' '^func Fuzz' internal); do \
		dir=./$$(dirname $$f); \
		case " $(FUZZ_SKIP) " in *" $$(dirname $$f) "*) echo "fuzz $$dir: skipped (FUZZ_SKIP; make fuzz-long runs it)"; continue;; esac; \
		for t in $$(grep -h -o '^func Fuzz[A-Za-z0-9_]*' $$f | sed 's/func //'); do \
			echo "fuzz $$dir $$t ($(FUZZTIME))"; \
			if ! out=$$($(GO) test -run='^$$' -fuzz="^$$t$$" -fuzztime=$(FUZZTIME) -fuzzminimizetime=5s $$dir 2>&1); then \
				echo "$$out"; \
				echo "$$out" | grep -q 'context deadline exceeded' || exit 1; \
				echo "fuzz $$dir $$t: the fuzzing engine timed out (golang/go#75804, not a finding); running again"; \
				$(GO) test -run='^$$' -fuzz="^$$t$$" -fuzztime=$(FUZZTIME) -fuzzminimizetime=5s $$dir; \
			fi; \
		done; \
	done

fuzz-long:
	$(MAKE) fuzz FUZZTIME=5m FUZZ_SKIP=

## idlemem-long: RSS per 1,000 idle connections at 10,000 and 19,000, IoTD next to Mosquitto
## (skipped if not installed); three rounds, medians. bench-smoke runs a short version in `make test`.
idlemem-long:
	$(GO) run ./scripts/bench/compare --scenarios idle-10k,idle-19k --brokers iotd,mosquitto

## bench-smoke: the load tool and the compare script, briefly (seconds): proves they work, judges nothing.
bench-smoke: build
	@set -e; ./bin/iotd --listen 127.0.0.1:18830 --store memory & pid=$$!; trap "kill $$pid" EXIT; \
	for i in $$(seq 1 50); do ./bin/iotd bench conn -p 18830 -c 1 --duration 100ms >/dev/null 2>&1 && break; sleep 0.1; done; \
	./bin/iotd bench conn -p 18830 -c 200 --duration 1s; \
	./bin/iotd bench scenario -p 18830 --pubs 2 --subs 2 --qos 1 --duration 2s; \
	./bin/iotd bench scenario -p 18830 --pubs 1 --subs 1 --qos 0 --rate 1000 --duration 2s
	$(GO) run ./scripts/bench/compare --quick --brokers iotd

## crash-long: 200 kill -9 rounds per store backend (make test runs 20 each).
crash-long:
	IOTD_CRASH_ROUNDS=200 $(GO) test -count=1 -timeout 60m -run 'TestCrashRecovery' -v ./test/integration/

## recovery-long: start-up time with 100,000 retained messages and 10,000 sessions (make test: 10,000 and 1,000).
recovery-long:
	IOTD_RECOVERY_FULL=1 $(GO) test -count=1 -timeout 30m -run 'TestRecoveryTime' -v ./test/integration/

## soak-long: five minutes of steady QoS 1 load per backend, sampling the data directory's size.
soak-long:
	IOTD_SOAK=5m $(GO) test -count=1 -timeout 30m -run 'TestSoakDiskBounded' -v ./test/integration/

## bench-store: QoS 1 fan-in through persistent sessions per store backend and fsync policy, next to memory.
bench-store:
	./scripts/bench/store.sh

## bench-tls: TLS next to plain TCP, IoTD next to Mosquitto (needs openssl and mosquitto).
bench-tls:
	./scripts/bench/tls.sh

## bench-compare: IoTD next to Mosquitto, mochi-mqtt and NATS (docs/benchmarks.md says how to install them).
bench-compare:
	$(GO) run ./scripts/bench/compare

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf bin coverage
