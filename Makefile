GO        ?= go
PKGS      := ./...
FUZZTIME  ?= 20s
# The in-process TPM simulator (go-tpm-tools, cgo) needs OpenSSL headers to
# compile; without them its tests are left out and say so when run.
TESTTAGS  ?= $(shell test -f /usr/include/openssl/evp.h && echo tpmsimulator)

.PHONY: all build test lint proto bench bench-go demo demo-idscp2 fuzz testpki clean

all: build

build:
	$(GO) build -o bin/ ./cmd/...

## test: the whole suite with the race detector, as CI runs it.
test:
	$(GO) vet -tags '$(TESTTAGS)' $(PKGS)
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) test -race -timeout 12m -tags '$(TESTTAGS)' $(PKGS)

lint:
	$(GO) vet $(PKGS)
	@test -z "$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$'))" || (gofmt -l . ; exit 1)

## proto: regenerate the committed Go code (needs protoc; protoc-gen-go is pinned in go.mod).
proto:
	PATH="$$($(GO) env GOPATH)/bin:$$PATH" protoc -I proto \
	  --plugin=protoc-gen-go="$$($(GO) tool -n protoc-gen-go)" \
	  --go_out=. --go_opt=module=github.com/idscp2-sidecar/idscp2-sidecar \
	  proto/idscpv2.proto proto/idscp2-app.proto
	PATH="$$($(GO) env GOPATH)/bin:$$PATH" protoc -I attestation/tpm/tpmpb \
	  --plugin=protoc-gen-go="$$($(GO) tool -n protoc-gen-go)" \
	  --go_out=. --go_opt=module=github.com/idscp2-sidecar/idscp2-sidecar \
	  attestation/tpm/tpmpb/tpm_attestation.proto

## bench: the harness in bench/harness: the backend direct, through a stunnel
## pair and through a sidecar pair, side by side, plus IDSCP2 handshake rate
## and idle-connection memory (about 1.5 minutes; see bench/README.md).
## Writes bench/results/latest.{md,json}. BENCHFLAGS passes options, e.g.
## BENCHFLAGS='-duration 5s'.
bench:
	BENCH_COMMAND='make bench' $(GO) run ./bench/harness $(BENCHFLAGS)

## bench-go: every Go benchmark in the module.
bench-go:
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

## demo: the embedded default: throw-away PKI, built-in DAPS, a sample
## provider service and two sidecars peered over IDSCP2 on loopback; one plain
## HTTP and one IDS multipart request through the tunnel. Needs only Go.
demo:
	$(GO) run ./cmd/idscp2-sidecar demo

## demo-idscp2: the bare protocol tool: two IDSCP2 peers exchange lines.
demo-idscp2: build
	@set -e; dir=$$(mktemp -d); trap 'kill $$lpid 2>/dev/null || true; rm -rf "$$dir"' EXIT; \
	$(GO) run ./testdata/genpki.go -out "$$dir" >/dev/null; \
	bin/idscp2 listen --addr 127.0.0.1:0 --addr-file "$$dir/addr" --echo --once --daps null \
	  --cert "$$dir/server.pem" --key "$$dir/server-key.pem" --ca "$$dir/ca.pem" >"$$dir/server.out" 2>"$$dir/server.err" & lpid=$$!; \
	for i in $$(seq 50); do [ -s "$$dir/addr" ] && break; sleep 0.1; done; \
	port=$$(sed 's/.*://' "$$dir/addr"); \
	echo "== client: two lines through IDSCP2 to localhost:$$port (echoed back)"; \
	printf 'hello, data space\nsecond message\n' | bin/idscp2 connect --addr "localhost:$$port" --daps null --linger 500ms \
	  --cert "$$dir/client.pem" --key "$$dir/client-key.pem" --ca "$$dir/ca.pem"; \
	wait $$lpid; echo "== server saw:"; cat "$$dir/server.err" "$$dir/server.out"

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzFrameReader -fuzztime $(FUZZTIME) ./idscp2
	$(GO) test -run '^$$' -fuzz FuzzDecodeMessage -fuzztime $(FUZZTIME) ./idscp2
	$(GO) test -run '^$$' -fuzz FuzzMachine -fuzztime $(FUZZTIME) ./fsm
	$(GO) test -run '^$$' -fuzz FuzzVerify -fuzztime $(FUZZTIME) ./idscp2/dat
	$(GO) test -run '^$$' -fuzz FuzzDecodeTpmMessage -fuzztime $(FUZZTIME) -fuzzminimizetime 2s ./attestation/tpm

## testpki: write a throw-away test PKI to testdata/pki (tests make their own in memory).
testpki:
	$(GO) run ./testdata/genpki.go -out testdata/pki

clean:
	rm -rf bin testdata/pki
