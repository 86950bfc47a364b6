GO        ?= go
PKGS      := ./...
FUZZTIME  ?= 20s

.PHONY: all build test lint proto bench demo fuzz testpki clean

all: build

build:
	$(GO) build -o bin/ ./cmd/...

## test: the whole suite with the race detector, as CI runs it.
test:
	$(GO) vet $(PKGS)
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) test -race -timeout 12m $(PKGS)

lint:
	$(GO) vet $(PKGS)
	@test -z "$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$'))" || (gofmt -l . ; exit 1)

## proto: regenerate the committed Go code (needs protoc; protoc-gen-go is pinned in go.mod).
proto:
	PATH="$$($(GO) env GOPATH)/bin:$$PATH" protoc -I proto \
	  --plugin=protoc-gen-go="$$($(GO) tool -n protoc-gen-go)" \
	  --go_out=. --go_opt=module=github.com/idscp2-sidecar/idscp2-sidecar \
	  proto/idscpv2.proto proto/idscp2-app.proto

bench:
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

demo:
	$(GO) run ./cmd/idscp2-sidecar demo

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzFrameReader -fuzztime $(FUZZTIME) ./idscp2
	$(GO) test -run '^$$' -fuzz FuzzDecodeMessage -fuzztime $(FUZZTIME) ./idscp2
	$(GO) test -run '^$$' -fuzz FuzzMachine -fuzztime $(FUZZTIME) ./fsm

## testpki: write a throw-away test PKI to testdata/pki (tests make their own in memory).
testpki:
	$(GO) run ./testdata/genpki.go -out testdata/pki

clean:
	rm -rf bin testdata/pki
