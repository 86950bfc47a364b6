package peering_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/idscp2-sidecar/idscp2-sidecar/idscp2"
	"github.com/idscp2-sidecar/idscp2-sidecar/sidecar/peering"
)

// An egress handler maps the pool's errors to HTTP statuses.
func Example() {
	var cfg *idscp2.Config // this sidecar's identity, trust and DAT driver
	pool, err := peering.New(peering.Options{
		Name: "provider",
		Dial: func(ctx context.Context) (*idscp2.Conn, error) {
			return idscp2.Dial(ctx, "tcp", "provider.example:29292", cfg)
		},
		// Correlate reads the IDS header's correlationMessage.
		Correlate: func(payload []byte) (string, error) { return "", errors.New("not shown") },
	})
	if err != nil {
		panic(err)
	}
	defer pool.Close()

	status := func(err error) int {
		var unavailable *peering.UnavailableError
		var lost *peering.LostError
		switch {
		case err == nil:
			return http.StatusOK
		case errors.Is(err, peering.ErrQueueFull), errors.Is(err, peering.ErrClosed):
			return http.StatusServiceUnavailable // with Retry-After
		case errors.Is(err, context.DeadlineExceeded):
			return http.StatusGatewayTimeout
		case errors.As(err, &unavailable), errors.As(err, &lost):
			return http.StatusBadGateway // naming err, e.g. the IDSCP2 close cause
		default:
			return http.StatusInternalServerError
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = pool.RoundTrip(ctx, &peering.Request{ID: "https://w3id.org/idsa/autogen/requestMessage/1", Payload: []byte("…")})
	fmt.Println(status(err))
}
