// Package daps is the DAPS client DAT driver: it obtains this connector's
// Dynamic Attribute Token from a DAPS (Omejdn, the built-in
// idscp2/dat/dapsserver, or any RFC 8414 / RFC 7523 authorization server
// configured as IDS-G describes) and verifies peers' DATs against the same
// DAPS's keys. It is wire-compatible with idscp2-jvm's AISEC DAPS driver
// (AisecDapsDriver.kt):
//
//   - Metadata discovery per RFC 8414: GET
//     {scheme}://{host}/.well-known/oauth-authorization-server{path of URL}.
//     On HTTP 404 the reference's fallback is used: issuer {scheme}://{host},
//     token endpoint {URL}/token, JWKS {URL}/.well-known/jwks.json, cached
//     for 24 h. Unlike the reference, the port of URL is kept (the reference
//     drops it, which only works on default ports). The document is cached
//     for its Cache-Control max-age.
//   - Token request: client-credentials grant authenticated with an RFC 7523
//     client assertion signed with the connector key (iss = sub = the
//     connector id SKI:keyid:AKI of the certificate), scope
//     idsc:IDS_CONNECTOR_ATTRIBUTES_ALL and a claims request for
//     transportCertsSha256.
//   - The DAT is cached and renewed in the background once Threshold of its
//     lifetime has passed; callers get the still-valid token meanwhile.
//   - Peer DATs are verified by dat.JWTVerifier with the DAPS's JWKS, keys
//     selected by kid; an unknown kid refreshes the JWKS at most once per
//     JWKSRefreshInterval.
package daps

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/idscp2-sidecar/idscp2-sidecar/idscp2/dat"
)

// Defaults of Config.
const (
	DefaultThreshold           = 0.666                   // as idscp2-jvm AisecDapsDriverConfig
	DefaultRequestTimeout      = 1500 * time.Millisecond // per HTTP request, as the reference's Ktor client
	DefaultRetries             = 3                       // as the reference: 3 retries on 5xx or I/O errors
	DefaultRetryBackoff        = 100 * time.Millisecond  // first retry delay, doubled each time
	DefaultFetchTimeout        = 10 * time.Second        // one whole token, metadata or JWKS fetch with retries
	DefaultAssertionLifetime   = 5 * time.Minute
	DefaultJWKSRefreshInterval = 10 * time.Second
	DefaultMetadataTTL         = time.Hour        // when the DAPS sends no Cache-Control max-age
	MinCacheTTL                = 10 * time.Second // lower bound on any max-age honoured
	MaxCacheTTL                = 24 * time.Hour   // upper bound on any max-age honoured
	FallbackMetadataTTL        = 24 * time.Hour   // the reference's META_FALLBACK_LIFETIME_MS
	DefaultMaxResponseSize     = 1 << 20          // bytes of any DAPS response body
	DefaultSignatureCache      = 1024             // verified signatures remembered
)

// Scope and assertion constants of the IDS DAPS protocol.
const (
	Scope               = "idsc:IDS_CONNECTOR_ATTRIBUTES_ALL"
	ClientAssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
	AssertionContext    = "https://w3id.org/idsa/contexts/context.jsonld"
	AssertionType       = "ids:DatRequestToken"
)

// Outcomes passed to Config.OnTokenFetch, one per token fetch (a fetch may
// make several HTTP attempts). The set is fixed, so it is safe as a metric
// label.
const (
	FetchOK        = "ok"              // a DAT was obtained
	FetchMetadata  = "error_metadata"  // discovery failed (no token endpoint)
	FetchNetwork   = "error_network"   // connection errors or timeouts on every attempt
	FetchHTTP      = "error_http"      // the DAPS answered with a non-200 status (OAuth error)
	FetchResponse  = "error_response"  // 200 with an unusable body
	FetchAssertion = "error_assertion" // the client assertion could not be signed
	FetchCanceled  = "canceled"        // the driver was closed
)

// Config configures a Driver. URL, Certificate and Key are required; every
// other zero value means the default above.
type Config struct {
	// URL locates the DAPS, e.g. "https://daps.example.org/auth" (Omejdn:
	// the issuer URL). Metadata is discovered from it per RFC 8414.
	URL string

	// Certificate is the connector certificate: its SKI and AKI form the
	// connector id (iss and sub of the client assertion), and its
	// fingerprint is requested for transportCertsSha256. It should be the
	// certificate this side presents in IDSCP2's TLS handshake.
	Certificate *x509.Certificate
	// Key signs the client assertion: an *ecdsa.PrivateKey (P-256/384/521 →
	// ES256/384/512), *rsa.PrivateKey (RS256) or ed25519.PrivateKey
	// (EdDSA), or any crypto.Signer with such a public key (e.g. a key in a
	// hardware module).
	Key crypto.Signer

	// HTTPClient talks to the DAPS. Nil means a client with its own
	// transport trusting RootCAs. Its Timeout, if any, applies on top of
	// RequestTimeout.
	HTTPClient *http.Client
	// RootCAs verifies the DAPS's TLS certificate when HTTPClient is nil;
	// nil means the system roots.
	RootCAs *x509.CertPool

	// Audience is the aud of the client assertion. Empty means the token
	// endpoint URL (idscp2-jvm's choice, RFC 7523). omejdn-daps as shipped
	// accepts only "idsc:IDS_CONNECTORS_ALL" (OMEJDN_ACCEPT_AUDIENCE), as the
	// TRUE connector sends.
	Audience string
	// AssertionLifetime is exp−iat of the client assertion. The reference
	// uses 24 h; a short lifetime limits what a captured assertion is worth
	// (Omejdn keeps no jti replay cache) and 5 min still tolerates any
	// sane clock skew and retries.
	AssertionLifetime time.Duration
	// TransportCerts are extra certificate fingerprints (lowercase hex
	// SHA-256 over DER, see dat.Fingerprint) requested for
	// transportCertsSha256 besides Certificate's own.
	TransportCerts []string
	// NoClaimsRequest disables the claims request parameter (a DAPS then
	// puts its configured transportCertsSha256 into the token).
	NoClaimsRequest bool

	// Threshold is the fraction of a DAT's lifetime after which it is
	// renewed (in (0,1]); it is also the driver's RenewalThreshold for peer
	// DATs. Default 0.666.
	Threshold float64

	// RequestTimeout bounds each HTTP request. Default 1.5 s.
	RequestTimeout time.Duration
	// Retries is how many times a request is repeated after an I/O error,
	// a timeout, HTTP 429 or 5xx (never after other statuses). Default 3;
	// negative means none.
	Retries int
	// RetryBackoff is the delay before the first retry, doubled for each
	// further one (with jitter). Default 100 ms.
	RetryBackoff time.Duration
	// FetchTimeout bounds one whole fetch (all its attempts) when it runs
	// in the background, independent of the callers that wait for it
	// (they wait only as long as their own context allows). Default 10 s.
	FetchTimeout time.Duration

	// Issuer, if set, is the required iss of peer DATs instead of the
	// issuer in the DAPS metadata.
	Issuer string
	// MinSecurityProfile, if set, is the lowest securityProfile accepted
	// from peers (either naming generation; see dat.ProfileLevel).
	MinSecurityProfile string
	// MaxTokenSize caps the size of peer DATs and of the DAT the DAPS
	// issues. Default dat.DefaultMaxTokenSize.
	MaxTokenSize int
	// Leeway is the clock skew allowed for exp, nbf and iat. Default 30 s.
	Leeway time.Duration
	// SignatureCache is how many verified DAT signatures are remembered
	// (dat.VerifierConfig.SignatureCache): a peer presents the same DAT on
	// every new connection and often in DAT renewals, and the public-key
	// operation is most of the cost of a verification. Default
	// DefaultSignatureCache; negative disables it.
	SignatureCache int
	// JWKSRefreshInterval is the least time between two JWKS fetches made
	// because a token named an unknown kid, so that forged tokens cannot
	// make the driver hammer the DAPS. Default 10 s.
	JWKSRefreshInterval time.Duration

	// Logger receives the driver's logs; nil means slog.Default().
	Logger *slog.Logger
	// OnRefusal, if set, is called with the reason of every refused DAT
	// (for a metric such as idscp2_dat_refused_total{reason}). It must not
	// block.
	OnRefusal func(reason dat.Reason)
	// OnTokenFetch, if set, is called once per token fetch with one of the
	// Fetch* outcomes. It must not block.
	OnTokenFetch func(outcome string)

	// Now is the clock, for tests; nil means time.Now.
	Now func() time.Time
}

// resolved checks c and fills in defaults.
func (c Config) resolved() (Config, *url.URL, error) {
	if c.URL == "" {
		return c, nil, errors.New("daps: Config.URL is required")
	}
	u, err := url.Parse(c.URL)
	if err != nil {
		return c, nil, fmt.Errorf("daps: Config.URL: %w", err)
	}
	if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return c, nil, fmt.Errorf("daps: Config.URL %q is not an absolute http(s) URL", c.URL)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return c, nil, fmt.Errorf("daps: Config.URL %q must not have a query or fragment", c.URL)
	}
	if c.Certificate == nil {
		return c, nil, errors.New("daps: Config.Certificate is required")
	}
	if c.Key == nil {
		return c, nil, errors.New("daps: Config.Key is required")
	}
	if _, err := assertionAlg(c.Key.Public()); err != nil {
		return c, nil, err
	}
	if c.Threshold == 0 {
		c.Threshold = DefaultThreshold
	}
	if !(c.Threshold > 0 && c.Threshold <= 1) {
		return c, nil, fmt.Errorf("daps: Config.Threshold %v is not in (0,1]", c.Threshold)
	}
	for _, d := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"RequestTimeout", &c.RequestTimeout, DefaultRequestTimeout},
		{"RetryBackoff", &c.RetryBackoff, DefaultRetryBackoff},
		{"FetchTimeout", &c.FetchTimeout, DefaultFetchTimeout},
		{"AssertionLifetime", &c.AssertionLifetime, DefaultAssertionLifetime},
		{"JWKSRefreshInterval", &c.JWKSRefreshInterval, DefaultJWKSRefreshInterval},
		{"Leeway", &c.Leeway, dat.DefaultLeeway},
	} {
		if *d.v < 0 {
			return c, nil, fmt.Errorf("daps: negative Config.%s %v", d.name, *d.v)
		}
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	switch {
	case c.Retries == 0:
		c.Retries = DefaultRetries
	case c.Retries < 0:
		c.Retries = 0
	}
	switch {
	case c.SignatureCache == 0:
		c.SignatureCache = DefaultSignatureCache
	case c.SignatureCache < 0:
		c.SignatureCache = 0
	}
	if c.MaxTokenSize < 0 {
		return c, nil, fmt.Errorf("daps: negative Config.MaxTokenSize %d", c.MaxTokenSize)
	}
	if c.MaxTokenSize == 0 {
		c.MaxTokenSize = dat.DefaultMaxTokenSize
	}
	if c.MinSecurityProfile != "" && dat.ProfileLevel(c.MinSecurityProfile) == dat.ProfileInvalid {
		return c, nil, fmt.Errorf("daps: unknown Config.MinSecurityProfile %q", c.MinSecurityProfile)
	}
	for _, fp := range c.TransportCerts {
		if !isFingerprint(fp) {
			return c, nil, fmt.Errorf("daps: Config.TransportCerts: %q is not a lowercase hex SHA-256 fingerprint", fp)
		}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c, u, nil
}

func isFingerprint(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
