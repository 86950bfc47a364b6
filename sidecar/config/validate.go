package config

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/idscp2-sidecar/idscp2-sidecar/idscp2/dat"
)

type validator struct {
	c     *Config
	paths map[string]int
	errs  []*FieldError
	now   time.Time
}

func (v *validator) errorf(path, format string, args ...any) {
	v.errs = append(v.errs, &FieldError{Path: path, Line: v.line(path), Msg: fmt.Sprintf(format, args...)})
}

// line is the line of path, or of its nearest ancestor present in the file.
func (v *validator) line(path string) int {
	for p := path; p != ""; p = parentPath(p) {
		if l, ok := v.paths[p]; ok {
			return l
		}
	}
	return 0
}

func parentPath(p string) string {
	i := strings.LastIndexAny(p, ".[")
	if i < 0 {
		return ""
	}
	return p[:i]
}

func (v *validator) set(path string) bool { _, ok := v.paths[path]; return ok }

func (v *validator) validate() {
	v.now = time.Now()
	c := v.c
	v.identity()
	v.daps()
	v.attestation()
	v.idscp2()
	v.limits()
	if c.Ingress == nil && len(c.Egress) == 0 {
		v.errorf("", "nothing to do: configure ingress, egress or both")
	}
	v.ingress()
	v.peers()
	v.egress()
	if c.Admin.Listen != "" {
		v.listen("admin.listen", c.Admin.Listen)
	}
	v.listenConflicts()
	v.positive("shutdown.drainTimeout", c.Shutdown.DrainTimeout)
	v.oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")
	v.oneOf("log.format", c.Log.Format, "text", "json")
}

// ---- identity ----

func (v *validator) identity() {
	id := v.c.Identity
	var certPEM []byte
	if id.Cert == "" {
		v.errorf("identity.cert", "required: the PEM certificate (chain) this sidecar presents")
	} else if data := v.file("identity.cert", id.Cert); data != nil {
		if leaf, err := firstCert(data); err != nil {
			v.errorf("identity.cert", "%s: %v", id.Cert, err)
		} else {
			certPEM = data
			if v.now.After(leaf.NotAfter) {
				v.errorf("identity.cert", "%s: the certificate expired at %s", id.Cert, leaf.NotAfter.UTC().Format(time.RFC3339))
			}
		}
	}
	if id.Key == "" {
		v.errorf("identity.key", "required: the PEM private key of identity.cert")
	} else if keyPEM := v.file("identity.key", id.Key); keyPEM != nil && certPEM != nil {
		if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
			v.errorf("identity.key", "%s does not go with %s: %v", id.Key, id.Cert, err)
		}
	}
	if id.CA == "" {
		v.errorf("identity.ca", "required: the PEM CA certificates peers must chain to")
	} else {
		v.certPool("identity.ca", id.CA)
	}
	v.uri("identity.connectorId", id.ConnectorID)
	v.uri("identity.senderAgent", id.SenderAgent)
}

// ---- daps ----

func (v *validator) daps() {
	d := v.c.DAPS
	only := func(path, mode string, isSet bool) {
		if isSet {
			v.errorf(path, "only used with daps.mode %s (mode is %q)", mode, d.Mode)
		}
	}
	switch d.Mode {
	case "":
		v.errorf("daps.mode", "required: null, local or daps (null authenticates nobody, so it is not a default)")
		return
	case DAPSModeNull, DAPSModeLocal, DAPSModeDAPS:
	default:
		v.errorf("daps.mode", "unknown mode %q (use null, local or daps)", d.Mode)
		return
	}
	if d.Mode != DAPSModeDAPS {
		only("daps.url", "daps", d.URL != "")
		only("daps.caFile", "daps", d.CAFile != "")
		only("daps.audience", "daps", d.Audience != "")
		only("daps.timeout", "daps", d.Timeout != 0)
	}
	if d.Mode != DAPSModeLocal {
		only("daps.keyFile", "local", d.KeyFile != "")
		only("daps.lifetime", "local", d.Lifetime != 0)
		only("daps.securityProfile", "local", d.SecurityProfile != "")
	}
	if d.Mode == DAPSModeNull {
		for _, k := range []string{"issuer", "renewalThreshold", "minSecurityProfile"} {
			if v.set("daps." + k) {
				v.errorf("daps."+k, "not used with daps.mode null: NullDaps verifies no DAT")
			}
		}
		return
	}
	if !(d.RenewalThreshold > 0 && d.RenewalThreshold <= 1) {
		v.errorf("daps.renewalThreshold", "%v is not in (0,1]", d.RenewalThreshold)
	}
	v.profile("daps.minSecurityProfile", d.MinSecurityProfile)

	if d.Mode == DAPSModeDAPS {
		if d.URL == "" {
			v.errorf("daps.url", "required with daps.mode daps: the DAPS URL, e.g. https://daps.example.org/auth")
		} else if u, err := url.Parse(d.URL); err != nil {
			v.errorf("daps.url", "%v", err)
		} else if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			v.errorf("daps.url", "%q is not an absolute http(s) URL", d.URL)
		} else if u.RawQuery != "" || u.Fragment != "" {
			v.errorf("daps.url", "%q must not have a query or fragment", d.URL)
		}
		if d.CAFile != "" {
			v.certPool("daps.caFile", d.CAFile)
		}
		v.positive("daps.timeout", d.Timeout)
		return
	}

	// local
	if d.Issuer == "" {
		v.errorf("daps.issuer", "required with daps.mode local: the issuer name shared by the closed set-up")
	}
	v.positive("daps.lifetime", d.Lifetime)
	if dat.ProfileLevel(d.SecurityProfile) == dat.ProfileInvalid {
		v.errorf("daps.securityProfile", "%s", badProfile(d.SecurityProfile))
	}
	if d.KeyFile == "" {
		v.errorf("daps.keyFile", "required with daps.mode local: the PEM signing key shared by the closed set-up")
	} else if data := v.file("daps.keyFile", d.KeyFile); data != nil {
		key, err := ParsePrivateKeyPEM(data)
		if err == nil {
			_, err = dat.NewLocalIssuer("check", key, "")
		}
		if err != nil {
			v.errorf("daps.keyFile", "%s: %v", d.KeyFile, err)
		}
	}
}

// ---- attestation ----

func (v *validator) attestation() {
	a := v.c.Attestation
	v.suites("attestation.supportedSuites", a.SupportedSuites)
	v.suites("attestation.expectedSuites", a.ExpectedSuites)
	v.positive("attestation.interval", a.Interval)
	prove := slices.Contains(a.SupportedSuites, SuiteTPM)
	verify := slices.Contains(a.ExpectedSuites, SuiteTPM)
	t := a.TPM
	if t == nil {
		if prove || verify {
			v.errorf("attestation.tpm", "required: suite TPM is in %s", whichLists(prove, verify))
		}
		return
	}
	const p = "attestation.tpm."
	if !prove {
		for _, f := range []struct {
			key   string
			isSet bool
		}{{"device", t.Device != ""}, {"address", t.Address != ""}, {"akHandle", t.AKHandle != 0}, {"akCert", t.AKCert != ""}} {
			if f.isSet {
				v.errorf(p+f.key, "only used when TPM is in attestation.supportedSuites (this side proving with a TPM)")
			}
		}
	} else {
		if t.Device != "" && t.Address != "" {
			v.errorf(p+"address", "set either device or address (a TPM simulator), not both")
		} else if t.Address != "" {
			if _, _, err := hostPort(t.Address, false); err != nil {
				v.errorf(p+"address", "%v", err)
			}
		} else if _, err := os.Stat(t.Device); err != nil {
			v.errorf(p+"device", "%v", err)
		}
		if t.AKHandle < 0x81000000 || t.AKHandle > 0x81FFFFFF {
			v.errorf(p+"akHandle", "%#x is not a persistent handle (0x81000000-0x81ffffff)", t.AKHandle)
		}
		if t.AKCert != "" {
			if data := v.file(p+"akCert", t.AKCert); data != nil {
				if _, err := firstCert(data); err != nil {
					v.errorf(p+"akCert", "%s: %v", t.AKCert, err)
				}
			}
		}
	}
	if !verify {
		for _, f := range []struct {
			key   string
			isSet bool
		}{{"roots", t.Roots != ""}, {"pinnedKeys", len(t.PinnedKeys) > 0}, {"goldenValues", t.GoldenValues != ""},
			{"goldenValuesFromDat", t.GoldenValuesFromDAT}, {"attestationType", t.AttestationType != ""}, {"pcrMask", t.PCRMask != ""}} {
			if f.isSet {
				v.errorf(p+f.key, "only used when TPM is in attestation.expectedSuites (this side verifying peers' TPMs)")
			}
		}
		return
	}
	if t.Roots == "" && len(t.PinnedKeys) == 0 {
		v.errorf(p+"roots", "required to verify TPM peers: roots (CA file for AK certificates) or pinnedKeys")
	}
	if t.Roots != "" {
		v.certPool(p+"roots", t.Roots)
	}
	for i, k := range t.PinnedKeys {
		path := fmt.Sprintf("%spinnedKeys[%d]", p, i)
		if data := v.file(path, k); data != nil {
			if err := parsePublicKeyPEM(data); err != nil {
				v.errorf(path, "%s: %v", k, err)
			}
		}
	}
	if t.GoldenValues == "" && !t.GoldenValuesFromDAT {
		v.errorf(p+"goldenValues", "required to verify TPM peers: goldenValues (a file) or goldenValuesFromDat: true")
	}
	if t.GoldenValues != "" {
		v.file(p+"goldenValues", t.GoldenValues)
	}
	switch t.AttestationType {
	case TPMBasic, TPMAll:
		if t.PCRMask != "" {
			v.errorf(p+"pcrMask", "only used with attestationType ADVANCED (%s selects its PCRs itself)", t.AttestationType)
		}
	case TPMAdvanced:
		if t.PCRMask == "" {
			v.errorf(p+"pcrMask", "required with attestationType ADVANCED, e.g. \"0-7,10\"")
		} else if err := checkPCRMask(t.PCRMask); err != nil {
			v.errorf(p+"pcrMask", "%v", err)
		}
	default:
		v.errorf(p+"attestationType", "unknown type %q (use BASIC, ALL or ADVANCED)", t.AttestationType)
	}
}

func whichLists(prove, verify bool) string {
	switch {
	case prove && verify:
		return "attestation.supportedSuites and attestation.expectedSuites"
	case prove:
		return "attestation.supportedSuites"
	default:
		return "attestation.expectedSuites"
	}
}

func (v *validator) suites(path string, list []string) {
	seen := map[string]bool{}
	for i, s := range list {
		p := fmt.Sprintf("%s[%d]", path, i)
		switch {
		case !slices.Contains(KnownSuites, s):
			v.errorf(p, "unknown attestation suite %q (known: %s)", s, strings.Join(KnownSuites, ", "))
		case seen[s]:
			v.errorf(p, "suite %q is listed twice", s)
		}
		seen[s] = true
	}
}

// checkPCRMask accepts a PCR list such as "0-7,10,16" (PCRs 0-23).
func checkPCRMask(s string) error {
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		b := a
		if err == nil && isRange {
			b, err = strconv.Atoi(hi)
		}
		if err != nil {
			return fmt.Errorf("bad PCR list %q: %q is not a PCR number or range such as 0-7", s, part)
		}
		if a < 0 || b > 23 || a > b {
			return fmt.Errorf("bad PCR list %q: %q is outside PCRs 0-23", s, part)
		}
	}
	return nil
}

// ---- idscp2 and limits ----

func (v *validator) idscp2() {
	p := v.c.IDSCP2
	v.positive("idscp2.handshakeTimeout", p.HandshakeTimeout)
	v.positive("idscp2.ackTimeout", p.AckTimeout)
	v.positive("idscp2.frameTimeout", p.FrameTimeout)
	v.positive("idscp2.writeTimeout", p.WriteTimeout)
	if p.MaxFrameSize <= 2*FrameHeadroom || p.MaxFrameSize > math.MaxInt32 {
		v.errorf("idscp2.maxFrameSize", "%s is not in (128KiB, 2GiB)", p.MaxFrameSize)
	}
}

// maxBody is the largest body a frame can carry.
func (v *validator) maxBody() ByteSize { return v.c.IDSCP2.MaxFrameSize - FrameHeadroom }

func (v *validator) bodyLimit(path string, b ByteSize) {
	if v.c.IDSCP2.MaxFrameSize <= 2*FrameHeadroom {
		return // idscp2.maxFrameSize is reported
	}
	if path != "limits.maxBodyBytes" && !v.set(path) {
		return // inherited from limits.maxBodyBytes, which is checked
	}
	if b <= 0 {
		v.errorf(path, "must be positive")
	} else if b > v.maxBody() {
		v.errorf(path, "%s does not fit in a frame: it must be at most idscp2.maxFrameSize (%s) minus %s for the IDS header, i.e. %s; raise idscp2.maxFrameSize for larger bodies",
			b, v.c.IDSCP2.MaxFrameSize, ByteSize(FrameHeadroom), v.maxBody())
	}
}

func (v *validator) limits() {
	l := v.c.Limits
	v.bodyLimit("limits.maxBodyBytes", l.MaxBodyBytes)
	v.atLeast("limits.maxConcurrentPerPeer", l.MaxConcurrentPerPeer, 1)
	v.atLeast("limits.maxQueuePerPeer", l.MaxQueuePerPeer, 1)
	v.positive("limits.retryAfter", l.RetryAfter)
}

// ---- ingress ----

var (
	nameRE        = regexp.MustCompile(`^[a-z0-9-]+$`)
	messageTypeRE = regexp.MustCompile(`^ids:[A-Za-z][A-Za-z0-9]*$`)
)

func (v *validator) ingress() {
	in := v.c.Ingress
	if in == nil {
		return
	}
	v.listen("ingress.listen", in.Listen)
	seen := map[string]bool{}
	for i, t := range in.Transports {
		p := fmt.Sprintf("ingress.transports[%d]", i)
		switch {
		case !slices.Contains(KnownTransports, t):
			v.errorf(p, "unknown transport %q (use %s)", t, strings.Join(KnownTransports, " or "))
		case seen[t]:
			v.errorf(p, "transport %q is listed twice", t)
		}
		seen[t] = true
	}
	v.atLeast("ingress.maxConcurrentRequests", in.MaxConcurrentRequests, 1)
	if len(in.Routes) == 0 {
		v.errorf("ingress.routes", "at least one route is required: without routes every incoming message is refused")
	}
	names := map[string]int{}
	catchAll := -1
	for i, r := range in.Routes {
		p := fmt.Sprintf("ingress.routes[%d]", i)
		v.name(p+".name", "route", r.Name, names, i, "ingress.routes")
		if catchAll >= 0 {
			v.errorf(p, "unreachable: ingress.routes[%d] (%q) has no match conditions and takes every message first", catchAll, in.Routes[catchAll].Name)
		} else if len(r.Match.MessageTypes) == 0 && r.Match.PathPrefix == "" && len(r.Match.Peers) == 0 {
			catchAll = i
		}
		v.route(p, r)
	}
}

func (v *validator) route(p string, r Route) {
	if r.Backend == "" {
		v.errorf(p+".backend", "required: the http:// or https:// URL of the local service")
	} else if u, err := url.Parse(r.Backend); err != nil {
		v.errorf(p+".backend", "%v", err)
	} else if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		v.errorf(p+".backend", "%q is not an absolute http:// or https:// URL", r.Backend)
	} else if u.Fragment != "" {
		v.errorf(p+".backend", "%q must not have a fragment", r.Backend)
	} else if r.BackendCA != "" && u.Scheme != "https" {
		v.errorf(p+".backendCA", "only used with an https:// backend")
	}
	if r.BackendCA != "" {
		v.certPool(p+".backendCA", r.BackendCA)
	}
	v.oneOf(p+".mode", r.Mode, ModeHTTP, ModeMultipart)
	v.positive(p+".timeout", r.Timeout)
	v.bodyLimit(p+".maxBodyBytes", r.MaxBodyBytes)

	m := r.Match
	for i, t := range m.MessageTypes {
		v.messageType(fmt.Sprintf("%s.match.messageTypes[%d]", p, i), t)
	}
	if m.PathPrefix != "" && !strings.HasPrefix(m.PathPrefix, "/") {
		v.errorf(p+".match.pathPrefix", "%q must start with /", m.PathPrefix)
	}
	v.nonEmpty(p+".match.peers", m.Peers)

	a := r.Allow
	null := v.c.DAPS.Mode == DAPSModeNull
	v.nonEmpty(p+".allow.subjects", a.Subjects)
	for i, c := range a.Connectors {
		path := fmt.Sprintf("%s.allow.connectors[%d]", p, i)
		if c == "" {
			v.errorf(path, "empty connector URI")
		} else {
			v.uri(path, c)
		}
	}
	v.profile(p+".allow.minSecurityProfile", a.MinSecurityProfile)
	for i, s := range a.Suites {
		path := fmt.Sprintf("%s.allow.suites[%d]", p, i)
		if !slices.Contains(KnownSuites, s) {
			v.errorf(path, "unknown attestation suite %q (known: %s)", s, strings.Join(KnownSuites, ", "))
		} else if !slices.Contains(v.c.Attestation.ExpectedSuites, s) {
			v.errorf(path, "suite %q is not in attestation.expectedSuites, so no peer is ever attested with it", s)
		}
	}
	if null {
		const why = "can never hold with daps.mode null: NullDaps verifies no DAT, so peers have no %s"
		if len(m.Peers) > 0 {
			v.errorf(p+".match.peers", why, "subject")
		}
		if len(a.Subjects) > 0 {
			v.errorf(p+".allow.subjects", why, "subject")
		}
		if a.MinSecurityProfile != "" {
			v.errorf(p+".allow.minSecurityProfile", why, "security profile")
		}
	}
}

// ---- peers and egress ----

func (v *validator) peers() {
	names := map[string]int{}
	for i, pe := range v.c.Peers {
		p := fmt.Sprintf("peers[%d]", i)
		v.name(p+".name", "peer", pe.Name, names, i, "peers")
		if pe.Address == "" {
			v.errorf(p+".address", "required: host:port of the peer's IDSCP2 listener")
		} else if _, port, err := hostPort(pe.Address, false); err != nil {
			v.errorf(p+".address", "%v", err)
		} else if port == 0 {
			v.errorf(p+".address", "%q: port 0 cannot be dialled", pe.Address)
		}
		if strings.ContainsAny(pe.ServerName, " /:") && net.ParseIP(pe.ServerName) == nil {
			v.errorf(p+".serverName", "%q is not a host name", pe.ServerName)
		}
		if !slices.Contains(KnownTransports, pe.Transport) {
			v.errorf(p+".transport", "unknown transport %q (use %s)", pe.Transport, strings.Join(KnownTransports, " or "))
		}
		v.atLeast(p+".poolSize", pe.PoolSize, 1)
		v.positive(p+".dialTimeout", pe.DialTimeout)
	}
}

func (v *validator) egress() {
	for i, e := range v.c.Egress {
		p := fmt.Sprintf("egress[%d]", i)
		if e.Listen == "" {
			v.errorf(p+".listen", "required: the local address legacy clients connect to, e.g. 127.0.0.1:8081")
		} else if host, ok := v.listen(p+".listen", e.Listen); ok && !e.AllowNonLoopback && !isLoopback(host) {
			where := fmt.Sprintf("%q is not a loopback address", e.Listen)
			if isWildcard(host) {
				where = fmt.Sprintf("%q listens on all interfaces", e.Listen)
			}
			v.errorf(p+".listen", "%s: anyone who can reach it can send requests as this connector; use 127.0.0.1 or set allowNonLoopback: true", where)
		}
		if e.Peer == "" {
			v.errorf(p+".peer", "required: the name of the peer in peers to send to")
		} else if v.c.Peer(e.Peer) == nil {
			v.errorf(p+".peer", "%q is not a defined peer", e.Peer)
		}
		v.oneOf(p+".mode", e.Mode, ModeAuto, ModeHTTP, ModeMultipart)
		v.messageType(p+".messageType", e.MessageType)
		v.positive(p+".timeout", e.Timeout)
		v.bodyLimit(p+".maxBodyBytes", e.MaxBodyBytes)
	}
}

// ---- listeners ----

// listen checks a listen address and returns its host.
func (v *validator) listen(path, addr string) (string, bool) {
	host, _, err := hostPort(addr, true)
	if err != nil {
		v.errorf(path, "%v", err)
		return "", false
	}
	return host, true
}

type listener struct {
	path, network, host string
	port                int
}

func (v *validator) listenConflicts() {
	var ls []listener
	add := func(path, network, addr string) {
		host, port, err := hostPort(addr, true)
		if err != nil || port == 0 {
			return
		}
		if host == "localhost" {
			host = "127.0.0.1"
		}
		ls = append(ls, listener{path, network, host, port})
	}
	if in := v.c.Ingress; in != nil {
		if slices.Contains(in.Transports, TransportTCP) {
			add("ingress.listen", "tcp", in.Listen)
		}
		if slices.Contains(in.Transports, TransportQUIC) {
			add("ingress.listen", "udp", in.Listen)
		}
	}
	for i, e := range v.c.Egress {
		add(fmt.Sprintf("egress[%d].listen", i), "tcp", e.Listen)
	}
	if v.c.Admin.Listen != "" {
		add("admin.listen", "tcp", v.c.Admin.Listen)
	}
	for j, b := range ls {
		for _, a := range ls[:j] {
			if a.network == b.network && a.port == b.port &&
				(a.host == b.host || isWildcard(a.host) || isWildcard(b.host)) {
				v.errorf(b.path, "port %d on %q is already used by %s", b.port, b.host, a.path)
				break
			}
		}
	}
}

var hostRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$`)

// hostPort splits and checks host:port. An empty host is only allowed for
// listen addresses (all interfaces).
func hostPort(addr string, listen bool) (string, int, error) {
	host, ps, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("%q is not host:port: %v", addr, err)
	}
	port, err := strconv.Atoi(ps)
	if err != nil || port < 0 || port > 65535 || ps == "" || ps[0] == '+' || ps[0] == '-' {
		return "", 0, fmt.Errorf("%q: port %q is not a number in 0-65535", addr, ps)
	}
	switch {
	case host == "":
		if !listen {
			return "", 0, fmt.Errorf("%q has no host", addr)
		}
	case net.ParseIP(host) != nil:
	case !hostRE.MatchString(host) || len(host) > 253:
		return "", 0, fmt.Errorf("%q: %q is neither an IP address nor a host name", addr, host)
	}
	return host, port, nil
}

func isWildcard(host string) bool {
	if host == "" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsUnspecified()
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// ---- helpers ----

func (v *validator) positive(path string, d Duration) {
	if d <= 0 {
		v.errorf(path, "must be a positive duration, got %s", d)
	}
}

func (v *validator) atLeast(path string, n, lo int) {
	if n < lo {
		v.errorf(path, "must be at least %d, got %d", lo, n)
	}
}

func (v *validator) oneOf(path, val string, allowed ...string) {
	if !slices.Contains(allowed, val) {
		v.errorf(path, "unknown value %q (use %s)", val, strings.Join(allowed, ", "))
	}
}

func (v *validator) nonEmpty(path string, list []string) {
	for i, s := range list {
		if strings.TrimSpace(s) == "" {
			v.errorf(fmt.Sprintf("%s[%d]", path, i), "empty value")
		}
	}
}

func (v *validator) name(path, what, name string, seen map[string]int, i int, list string) {
	switch {
	case name == "":
		v.errorf(path, "required: a unique %s name ([a-z0-9-]+)", what)
	case len(name) > 63 || !nameRE.MatchString(name):
		v.errorf(path, "%q is not a valid %s name: use 1-63 characters a-z, 0-9 and -", name, what)
	default:
		if j, dup := seen[name]; dup {
			v.errorf(path, "duplicate %s name %q (also %s[%d])", what, name, list, j)
		} else {
			seen[name] = i
		}
	}
}

func (v *validator) messageType(path, t string) {
	if !messageTypeRE.MatchString(t) {
		v.errorf(path, "%q is not a compact IDS message type such as \"ids:RequestMessage\"", t)
	}
}

func (v *validator) profile(path, p string) {
	if p != "" && dat.ProfileLevel(p) == dat.ProfileInvalid {
		v.errorf(path, "%s", badProfile(p))
	}
}

func badProfile(p string) string {
	return fmt.Sprintf("unknown security profile %q (use idsc:BASE_SECURITY_PROFILE, idsc:TRUST_SECURITY_PROFILE, idsc:TRUST_PLUS_SECURITY_PROFILE or the older idsc:BASE_CONNECTOR_SECURITY_PROFILE, idsc:TRUSTED_CONNECTOR_SECURITY_PROFILE, idsc:TRUSTED_CONNECTOR_PLUS_SECURITY_PROFILE)", p)
}

func (v *validator) uri(path, s string) {
	if s == "" {
		return
	}
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" || strings.ContainsAny(s, " \t\n") || (u.Opaque == "" && u.Host == "" && u.Path == "") {
		v.errorf(path, "%q is not an absolute URI (e.g. https://connector.example.org or urn:example:connector)", s)
	}
}

// file reads a file named by path, reporting why it cannot.
func (v *validator) file(path, name string) []byte {
	data, err := readLimited(name)
	if err != nil {
		v.errorf(path, "%v", err)
		return nil
	}
	return data
}

// certPool checks a PEM file of CA certificates.
func (v *validator) certPool(path, name string) {
	data := v.file(path, name)
	if data == nil {
		return
	}
	n := 0
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		if _, err := x509.ParseCertificate(b.Bytes); err != nil {
			v.errorf(path, "%s: certificate %d: %v", name, n+1, err)
			return
		}
		n++
	}
	if n == 0 {
		v.errorf(path, "%s: no PEM CERTIFICATE found", name)
	}
}

func firstCert(data []byte) (*x509.Certificate, error) {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil, errors.New("no PEM CERTIFICATE found")
		}
		if b.Type == "CERTIFICATE" {
			return x509.ParseCertificate(b.Bytes)
		}
	}
}

func parsePublicKeyPEM(data []byte) error {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return errors.New("no PEM PUBLIC KEY found")
		}
		if b.Type == "PUBLIC KEY" {
			_, err := x509.ParsePKIXPublicKey(b.Bytes)
			return err
		}
	}
}

// ParsePrivateKeyPEM parses the first private key in PEM data: PKCS#8
// ("PRIVATE KEY"), SEC 1 ("EC PRIVATE KEY") or PKCS#1 ("RSA PRIVATE KEY").
func ParsePrivateKeyPEM(data []byte) (crypto.Signer, error) {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil, errors.New("no PEM private key found")
		}
		var key any
		var err error
		switch b.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(b.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(b.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(b.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %v", b.Type, err)
		}
		switch k := key.(type) {
		case *ecdsa.PrivateKey:
			return k, nil
		case *rsa.PrivateKey:
			return k, nil
		case ed25519.PrivateKey:
			return k, nil
		default:
			return nil, fmt.Errorf("unsupported private key type %T", key)
		}
	}
}

// LoadPrivateKey reads a PEM private key file (see ParsePrivateKeyPEM),
// e.g. daps.keyFile.
func LoadPrivateKey(path string) (crypto.Signer, error) {
	data, err := readLimited(path)
	if err != nil {
		return nil, err
	}
	k, err := ParsePrivateKeyPEM(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	return k, nil
}
