package dapsserver

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/idscp2-sidecar/idscp2-sidecar/idscp2/dat"
)

// DefaultSecurityProfile is the securityProfile of clients registered
// without one (the current Information Model name, as Omejdn's helper
// script registers it).
const DefaultSecurityProfile = "idsc:BASE_SECURITY_PROFILE"

// Client is a registered connector.
type Client struct {
	// ID is the client id: the "sub" its client assertions must carry and
	// the "sub" of its DATs. Empty means dat.ConnectorID(Certificate).
	ID string
	// Certificate is the connector certificate: its key verifies the
	// client assertions and its fingerprint goes into transportCertsSha256.
	Certificate *x509.Certificate
	// SecurityProfile of the DATs; empty means DefaultSecurityProfile.
	SecurityProfile string
	// ReferringConnector, if set, is the referringConnector claim (the URI
	// of the connector's self-description).
	ReferringConnector string
	// TransportCerts are further certificate fingerprints (lowercase hex
	// SHA-256 over DER) the client may have put into transportCertsSha256
	// through a claims request.
	TransportCerts []string
	// Claims are extra DAT claims; they override the ones above.
	Claims map[string]any
	// TokenLifetime overrides Config.TokenLifetime for this client.
	TokenLifetime time.Duration
}

// clientAttributes is the optional JSON file next to a certificate in a
// client directory: for "conn-a.pem" it is "conn-a.json".
type clientAttributes struct {
	ID                 string         `json:"id"`
	SecurityProfile    string         `json:"securityProfile"`
	ReferringConnector string         `json:"referringConnector"`
	TransportCerts     []string       `json:"transportCertsSha256"`
	Claims             map[string]any `json:"claims"`
	TokenLifetime      string         `json:"tokenLifetime"` // Go duration, e.g. "10m"
}

// normalised checks c and fills in defaults.
func (c Client) normalised() (*Client, error) {
	if c.Certificate == nil {
		return nil, errors.New("dapsserver: a client needs a Certificate")
	}
	if c.ID == "" {
		c.ID = dat.ConnectorID(c.Certificate)
	}
	if c.SecurityProfile == "" {
		c.SecurityProfile = DefaultSecurityProfile
	}
	if c.TokenLifetime < 0 {
		return nil, fmt.Errorf("dapsserver: client %s: negative TokenLifetime", c.ID)
	}
	for _, fp := range c.TransportCerts {
		if len(fp) != 64 || strings.ToLower(fp) != fp || strings.Trim(fp, "0123456789abcdef") != "" {
			return nil, fmt.Errorf("dapsserver: client %s: %q is not a lowercase hex SHA-256 fingerprint", c.ID, fp)
		}
	}
	c.TransportCerts = slices.Clone(c.TransportCerts)
	c.Claims = maps.Clone(c.Claims)
	return &c, nil
}

// fingerprints is the registered transportCertsSha256 set: the
// certificate's own fingerprint first.
func (c *Client) fingerprints() []string {
	return append([]string{dat.Fingerprint(c.Certificate)}, c.TransportCerts...)
}

// AddClient registers (or replaces) a client.
func (s *Server) AddClient(c Client) error {
	n, err := c.normalised()
	if err != nil {
		return err
	}
	if dat.ProfileLevel(n.SecurityProfile) == dat.ProfileInvalid {
		s.log.Warn("client registered with a securityProfile no verifier recognises", "client", n.ID, "securityProfile", n.SecurityProfile)
	}
	s.regMu.Lock()
	s.clients[n.ID] = n
	s.regMu.Unlock()
	s.log.Info("client registered", "client", n.ID, "securityProfile", n.SecurityProfile, "fingerprint", dat.Fingerprint(n.Certificate))
	return nil
}

// RemoveClient unregisters a client; it reports whether it was registered.
func (s *Server) RemoveClient(id string) bool {
	s.regMu.Lock()
	_, ok := s.clients[id]
	delete(s.clients, id)
	s.regMu.Unlock()
	s.replay.forget(id)
	return ok
}

// ClientIDs lists the registered client ids, sorted.
func (s *Server) ClientIDs() []string {
	s.regMu.RLock()
	defer s.regMu.RUnlock()
	return slices.Sorted(maps.Keys(s.clients))
}

func (s *Server) client(id string) *Client {
	s.regMu.RLock()
	defer s.regMu.RUnlock()
	return s.clients[id]
}

// LoadClientDir registers a client for every PEM certificate file (*.pem,
// *.crt, *.cer) in dir: the first CERTIFICATE block of the file is the
// client's certificate, and an optional JSON file with the same base name
// (conn-a.pem → conn-a.json) sets its attributes:
//
//	{"securityProfile": "idsc:TRUST_SECURITY_PROFILE",
//	 "referringConnector": "https://conn-a.example/",
//	 "transportCertsSha256": ["<hex>"], "claims": {...},
//	 "tokenLifetime": "10m", "id": "<client id override>"}
//
// Files without a certificate (e.g. private keys) are skipped; an
// unreadable certificate or attribute file is an error and nothing of the
// directory is registered. It returns the number of clients registered.
func (s *Server) LoadClientDir(dir string) (int, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, fmt.Errorf("dapsserver: client directory: %w", err)
	}
	var clients []Client
	for _, e := range entries {
		ext := strings.ToLower(filepath.Ext(e.Name()))
		if e.IsDir() || (ext != ".pem" && ext != ".crt" && ext != ".cer") {
			continue
		}
		path := filepath.Join(dir, e.Name())
		data, err := os.ReadFile(path)
		if err != nil {
			return 0, fmt.Errorf("dapsserver: %w", err)
		}
		cert, err := firstCertificate(data)
		if err != nil {
			return 0, fmt.Errorf("dapsserver: %s: %w", path, err)
		}
		if cert == nil {
			s.log.Debug("skipping a file without a certificate in the client directory", "file", path)
			continue
		}
		c := Client{Certificate: cert}
		attrPath := strings.TrimSuffix(path, filepath.Ext(path)) + ".json"
		if raw, err := os.ReadFile(attrPath); err == nil {
			var a clientAttributes
			dec := json.NewDecoder(strings.NewReader(string(raw)))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&a); err != nil {
				return 0, fmt.Errorf("dapsserver: %s: %w", attrPath, err)
			}
			c.ID, c.SecurityProfile, c.ReferringConnector = a.ID, a.SecurityProfile, a.ReferringConnector
			c.TransportCerts, c.Claims = a.TransportCerts, a.Claims
			if a.TokenLifetime != "" {
				if c.TokenLifetime, err = time.ParseDuration(a.TokenLifetime); err != nil || c.TokenLifetime <= 0 {
					return 0, fmt.Errorf("dapsserver: %s: bad tokenLifetime %q", attrPath, a.TokenLifetime)
				}
			}
		} else if !errors.Is(err, fs.ErrNotExist) {
			return 0, fmt.Errorf("dapsserver: %w", err)
		}
		if _, err := c.normalised(); err != nil {
			return 0, fmt.Errorf("%w (%s)", err, path)
		}
		clients = append(clients, c)
	}
	for _, c := range clients {
		if err := s.AddClient(c); err != nil {
			return 0, err
		}
	}
	return len(clients), nil
}

// firstCertificate returns the first CERTIFICATE block of a PEM file, or
// nil if there is none.
func firstCertificate(data []byte) (*x509.Certificate, error) {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil, nil
		}
		if b.Type == "CERTIFICATE" {
			return x509.ParseCertificate(b.Bytes)
		}
	}
}
