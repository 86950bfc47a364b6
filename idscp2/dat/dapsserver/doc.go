// Package dapsserver is a built-in DAPS (Dynamic Attribute Provisioning
// Service): an OAuth 2.0 authorization server that issues IDS Dynamic
// Attribute Tokens the way Omejdn configured as omejdn-daps does, usable
// in-process (tests, the demo) as an http.Handler and behind
// "idscp2-sidecar daps --listen ADDR".
//
// IT IS MEANT FOR DEVELOPMENT AND CLOSED TEST DATA SPACES. It has no
// administration API, no certification process behind the attributes it
// asserts, no HSM for its signing key and no persistence of its jti replay
// cache; a production data space uses its operator's DAPS. Within that
// scope it is meant to be correct:
//
//   - Metadata (RFC 8414) at /.well-known/oauth-authorization-server (also
//     with the issuer path appended, RFC 8414 §3.1) and at
//     /.well-known/openid-configuration, with issuer, token_endpoint and
//     jwks_uri laid out as Omejdn does: issuer <base>, token endpoint
//     <base>/token, JWKS <base>/jwks.json (also served at
//     <base>/.well-known/jwks.json, idscp2-jvm's fallback location).
//     Metadata and JWKS carry Cache-Control: public, max-age=…,
//     must-revalidate, as Omejdn.
//   - Clients are registered from their certificates (a directory of PEM
//     certificates with optional JSON attribute files, or programmatically);
//     the client id is the connector id SKI:keyid:AKI (dat.ConnectorID).
//   - Token requests use the client-credentials grant with an RFC 7523
//     private_key_jwt client assertion, verified against the registered
//     certificate's key: signature (RS/PS/ES/EdDSA), iss = sub = client id,
//     aud in the accepted set, exp required, nbf/iat with 30 s leeway, a
//     maximum lifetime, and jti replay refused while the assertion is
//     valid (Omejdn has no replay check; idscp2-jvm sends no jti, so
//     assertions without jti are accepted unless RequireJTI is set).
//   - Errors are OAuth error documents with HTTP 400 and the codes Omejdn
//     uses: invalid_client ("Client unknown", "Client authentication
//     failed"), invalid_request ("Grant type not allowed" — Omejdn checks
//     the client's allowed grant types before anything else, so a wrong
//     grant type is invalid_request, not unsupported_grant_type),
//     access_denied ("No scopes granted"), invalid_target.
//   - DATs carry the claims of Omejdn with the omejdn-daps scope mapping
//     (dat.LocalIssuer's layout): scope, aud [idsc:IDS_CONNECTORS_ALL], iss,
//     sub, client_id, iat, nbf, exp, jti, @context, @type ids:DatPayload,
//     securityProfile, referringConnector and transportCertsSha256 (the
//     fingerprint of the registered certificate).
//   - The signing key is persistent (signing-key.pem in the state
//     directory, created 0600 if absent). Rotate makes a new one; the old
//     public key stays in the JWKS until every token it signed has expired
//     (plus a grace period for verifiers' leeway).
package dapsserver
