package daps

import (
	"context"
	"testing"
	"time"

	"github.com/idscp2-sidecar/idscp2-sidecar/idscp2/dat"
)

func TestRoundTrip(t *testing.T) {
	for _, tls := range []bool{false, true} {
		name := "http"
		if tls {
			name = "https"
		}
		t.Run(name, func(t *testing.T) {
			d := startDAPS(t, dapsOpts{path: "/auth", tls: tls})
			client := d.driverFor(t, pki.Client, nil)
			server := d.driverFor(t, pki.Server, nil)
			ctx := ctxTimeout(t, 10*time.Second)
			tok, err := client.Token(ctx)
			if err != nil {
				t.Fatal(err)
			}
			id, err := server.Verify(ctx, tok, pki.Client.Cert)
			if err != nil {
				t.Fatal(err)
			}
			if id.Subject != dat.ConnectorID(pki.Client.Cert) || id.Issuer != d.url {
				t.Errorf("identity %q from %q", id.Subject, id.Issuer)
			}
			if id.SecurityProfile != "idsc:BASE_SECURITY_PROFILE" || id.ReferringConnector != "https://client.example/" {
				t.Errorf("profile %q referring %q", id.SecurityProfile, id.ReferringConnector)
			}
			if life := time.Until(id.Expiry); life < 59*time.Minute || life > time.Hour+time.Second {
				t.Errorf("expiry in %v", life)
			}
			_, err = server.Verify(ctx, tok, pki.Server.Cert)
			wantReason(t, nil, err, dat.ReasonFingerprint)
			_ = context.Background
		})
	}
}
