package config

import (
	"reflect"
	"slices"
)

// RestartRequired lists the settings that differ between old and next and
// that a reload (SIGHUP) cannot apply, as YAML paths in file order. They
// take effect at the next restart; the sidecar applies everything else and
// logs these. docs/config.md ("Reloading") is the contract:
//
//   - live: identity files (certificates, key and CA are re-read; new
//     handshakes use them, established connections stay), identity URIs,
//     ingress routes, egress settings other than listen, limits.maxBodyBytes
//     and retryAfter, shutdown, log.level;
//   - restart: ingress (added, removed, listen, transports,
//     verifyClientAddress, maxConcurrentRequests), the set of egress listen
//     addresses, peers added or removed and their address, serverName,
//     transport, poolSize, dialTimeout and skipHostnameVerification,
//     limits.maxConcurrentPerPeer and maxQueuePerPeer (the pools' sizes),
//     daps, attestation, idscp2, admin and log.format.
func RestartRequired(old, next *Config) []string {
	var out []string
	diff := func(path string, a, b any) {
		if !reflect.DeepEqual(a, b) {
			out = append(out, path)
		}
	}
	diff("daps", old.DAPS, next.DAPS)
	diff("attestation", old.Attestation, next.Attestation)
	diff("idscp2", old.IDSCP2, next.IDSCP2)
	switch {
	case (old.Ingress == nil) != (next.Ingress == nil):
		out = append(out, "ingress")
	case old.Ingress != nil:
		diff("ingress.listen", old.Ingress.Listen, next.Ingress.Listen)
		diff("ingress.transports", old.Ingress.Transports, next.Ingress.Transports)
		diff("ingress.verifyClientAddress", old.Ingress.VerifyClientAddress, next.Ingress.VerifyClientAddress)
		diff("ingress.maxConcurrentRequests", old.Ingress.MaxConcurrentRequests, next.Ingress.MaxConcurrentRequests)
	}
	diff("peers", old.Peers, next.Peers)
	diff("limits.maxConcurrentPerPeer", old.Limits.MaxConcurrentPerPeer, next.Limits.MaxConcurrentPerPeer)
	diff("limits.maxQueuePerPeer", old.Limits.MaxQueuePerPeer, next.Limits.MaxQueuePerPeer)
	listens := func(c *Config) []string {
		var l []string
		for _, e := range c.Egress {
			l = append(l, e.Listen)
		}
		slices.Sort(l)
		return l
	}
	diff("egress", listens(old), listens(next))
	diff("admin", old.Admin, next.Admin)
	diff("log.format", old.Log.Format, next.Log.Format)
	return out
}
