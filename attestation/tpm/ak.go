package tpm

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"sync"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// KeyAlgorithm is the kind of attestation key.
type KeyAlgorithm int

const (
	// RSA2048 is an RSA-2048 key signing with RSASSA-PKCS1-v1_5 and SHA-256,
	// the only kind the reference verifier accepts (SHA256withRSA). Default.
	RSA2048 KeyAlgorithm = iota
	// ECCP256 is an ECDSA key on NIST P-256 signing with SHA-256: faster to
	// create and sign with, accepted by this verifier and tpm2-tools, not by
	// the reference verifier.
	ECCP256
)

func (a KeyAlgorithm) String() string {
	switch a {
	case RSA2048:
		return "rsa2048"
	case ECCP256:
		return "eccp256"
	default:
		return fmt.Sprintf("KeyAlgorithm(%d)", int(a))
	}
}

// Hierarchy is the TPM hierarchy an AK is created in.
type Hierarchy int

const (
	// Endorsement is the endorsement hierarchy (default), where the TPM's EK
	// lives and AKs conventionally do.
	Endorsement Hierarchy = iota
	// Owner is the storage (owner) hierarchy.
	Owner
)

func (h Hierarchy) handle() tpm2.TPMHandle {
	if h == Owner {
		return tpm2.TPMRHOwner
	}
	return tpm2.TPMRHEndorsement
}

// DefaultAKHandle is the persistent handle CreateAK and LoadAK use when
// none is given (in the owner-controlled range 0x81000000–0x817FFFFF).
const DefaultAKHandle uint32 = 0x81010002

// AKOptions says what attestation key CreateAK makes.
//
// On a real TPM creating an RSA primary key can take seconds: provision a
// persistent AK once (Persist) and LoadAK it at start-up. Without a
// resource manager (swtpm, /dev/tpm0) a transient AK of a process that
// died stays loaded until the TPM restarts; /dev/tpmrm0 flushes it.
type AKOptions struct {
	Algorithm KeyAlgorithm
	Hierarchy Hierarchy
	// HierarchyAuth is the authorisation value of Hierarchy (usually
	// empty); OwnerAuth that of the owner hierarchy, which persisting and
	// evicting need.
	HierarchyAuth []byte
	OwnerAuth     []byte
	// Persist stores the AK at Handle (DefaultAKHandle if 0) so LoadAK finds
	// it after a restart. Otherwise the AK is a transient object that Close
	// flushes. Either way the AK is a primary key: the same TPM, hierarchy
	// and algorithm always give the same key, so a transient AK re-created at
	// every start keeps its certificate.
	Persist bool
	Handle  uint32
	// Replace evicts an object already persisted at Handle. Without it,
	// an occupied handle is an error.
	Replace bool
}

// akTemplate returns the public template of a restricted signing key: it
// signs only TPM-generated structures (quotes) and digests the TPM hashed
// itself, and never leaves the TPM.
func akTemplate(alg KeyAlgorithm) (tpm2.TPMTPublic, error) {
	attrs := tpm2.TPMAObject{
		FixedTPM:            true,
		FixedParent:         true,
		SensitiveDataOrigin: true,
		UserWithAuth:        true,
		NoDA:                true,
		Restricted:          true,
		SignEncrypt:         true,
	}
	switch alg {
	case RSA2048:
		return tpm2.TPMTPublic{
			Type:             tpm2.TPMAlgRSA,
			NameAlg:          tpm2.TPMAlgSHA256,
			ObjectAttributes: attrs,
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
				Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
				Scheme: tpm2.TPMTRSAScheme{
					Scheme:  tpm2.TPMAlgRSASSA,
					Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgRSASSA, &tpm2.TPMSSigSchemeRSASSA{HashAlg: tpm2.TPMAlgSHA256}),
				},
				KeyBits: 2048,
			}),
			Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{}),
		}, nil
	case ECCP256:
		return tpm2.TPMTPublic{
			Type:             tpm2.TPMAlgECC,
			NameAlg:          tpm2.TPMAlgSHA256,
			ObjectAttributes: attrs,
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
				Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
				Scheme: tpm2.TPMTECCScheme{
					Scheme:  tpm2.TPMAlgECDSA,
					Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256}),
				},
				CurveID: tpm2.TPMECCNistP256,
				KDF:     tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
			}),
			Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{}),
		}, nil
	default:
		return tpm2.TPMTPublic{}, fmt.Errorf("tpm: unknown AK algorithm %v", alg)
	}
}

// AK is an attestation key loaded in a TPM.
type AK struct {
	tpm        *TPM
	handle     tpm2.TPMHandle
	name       tpm2.TPM2BName
	public     tpm2.TPMTPublic
	publicArea []byte // marshalled TPMT_PUBLIC
	key        crypto.PublicKey
	hash       crypto.Hash // of the signing scheme
	persistent bool

	mu     sync.Mutex
	closed bool
}

// CreateAK creates an attestation key as a primary key of the chosen
// hierarchy (empty hierarchy authorisation), optionally persisting it.
func CreateAK(ctx context.Context, t *TPM, opts AKOptions) (*AK, error) {
	tmpl, err := akTemplate(opts.Algorithm)
	if err != nil {
		return nil, err
	}
	handle := opts.Handle
	if handle == 0 {
		handle = DefaultAKHandle
	}
	if opts.Persist && (handle < 0x81000000 || handle > 0x817fffff) {
		return nil, fmt.Errorf("tpm: persistent handle %#x outside 0x81000000-0x817fffff", handle)
	}
	var ak *AK
	err = t.do(ctx, func(tr transport.TPM) error {
		rsp, err := tpm2.CreatePrimary{
			PrimaryHandle: tpm2.AuthHandle{Handle: opts.Hierarchy.handle(), Auth: tpm2.PasswordAuth(opts.HierarchyAuth)},
			InPublic:      tpm2.New2B(tmpl),
		}.Execute(tr)
		if err != nil {
			return fmt.Errorf("tpm: create AK: %w", err)
		}
		if !opts.Persist {
			ak, err = newAK(t, rsp.ObjectHandle, rsp.Name, rsp.OutPublic, false)
			if err != nil {
				flush(tr, rsp.ObjectHandle)
			}
			return err
		}
		defer flush(tr, rsp.ObjectHandle)
		ph := tpm2.TPMHandle(handle)
		if _, err := (tpm2.ReadPublic{ObjectHandle: ph}).Execute(tr); err == nil {
			if !opts.Replace {
				return fmt.Errorf("tpm: persistent handle %#x is in use (Replace evicts it)", handle)
			}
			if err := evict(tr, ph, opts.OwnerAuth); err != nil {
				return err
			}
		}
		if _, err := (tpm2.EvictControl{
			Auth:             tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(opts.OwnerAuth)},
			ObjectHandle:     &tpm2.NamedHandle{Handle: rsp.ObjectHandle, Name: rsp.Name},
			PersistentHandle: ph,
		}).Execute(tr); err != nil {
			return fmt.Errorf("tpm: persist AK at %#x: %w", handle, err)
		}
		ak, err = newAK(t, ph, rsp.Name, rsp.OutPublic, true)
		return err
	})
	if err != nil {
		return nil, err
	}
	return ak, nil
}

// LoadAK returns the attestation key persisted at handle (DefaultAKHandle if
// 0). It must be a restricted, TPM-bound signing key.
func LoadAK(ctx context.Context, t *TPM, handle uint32) (*AK, error) {
	if handle == 0 {
		handle = DefaultAKHandle
	}
	var ak *AK
	err := t.do(ctx, func(tr transport.TPM) error {
		rsp, err := (tpm2.ReadPublic{ObjectHandle: tpm2.TPMHandle(handle)}).Execute(tr)
		if err != nil {
			return fmt.Errorf("tpm: no AK at %#x: %w", handle, err)
		}
		ak, err = newAK(t, tpm2.TPMHandle(handle), rsp.Name, rsp.OutPublic, true)
		return err
	})
	return ak, err
}

// EvictAK removes the object persisted at handle (DefaultAKHandle if 0),
// authorised by the owner hierarchy's authorisation value (usually empty).
func EvictAK(ctx context.Context, t *TPM, handle uint32, ownerAuth []byte) error {
	if handle == 0 {
		handle = DefaultAKHandle
	}
	return t.do(ctx, func(tr transport.TPM) error { return evict(tr, tpm2.TPMHandle(handle), ownerAuth) })
}

func evict(tr transport.TPM, h tpm2.TPMHandle, ownerAuth []byte) error {
	rp, err := (tpm2.ReadPublic{ObjectHandle: h}).Execute(tr)
	if err != nil {
		return fmt.Errorf("tpm: nothing persisted at %#x: %w", uint32(h), err)
	}
	if _, err := (tpm2.EvictControl{
		Auth:             tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(ownerAuth)},
		ObjectHandle:     &tpm2.NamedHandle{Handle: h, Name: rp.Name},
		PersistentHandle: h,
	}).Execute(tr); err != nil {
		return fmt.Errorf("tpm: evict %#x: %w", uint32(h), err)
	}
	return nil
}

func flush(tr transport.TPM, h tpm2.TPMHandle) {
	_, _ = (tpm2.FlushContext{FlushHandle: h}).Execute(tr)
}

func newAK(t *TPM, h tpm2.TPMHandle, name tpm2.TPM2BName, pub2b tpm2.TPM2BPublic, persistent bool) (*AK, error) {
	pub, err := pub2b.Contents()
	if err != nil {
		return nil, fmt.Errorf("tpm: AK public area: %w", err)
	}
	a := pub.ObjectAttributes
	if !a.Restricted || !a.SignEncrypt || a.Decrypt || !a.FixedTPM || !a.FixedParent || !a.SensitiveDataOrigin {
		return nil, fmt.Errorf("tpm: object %#x is not a restricted, TPM-bound signing key", uint32(h))
	}
	var hashAlg tpm2.TPMIAlgHash
	switch pub.Type {
	case tpm2.TPMAlgRSA:
		p, err := pub.Parameters.RSADetail()
		if err != nil {
			return nil, err
		}
		var d *tpm2.TPMSSigSchemeRSASSA
		switch p.Scheme.Scheme {
		case tpm2.TPMAlgRSASSA:
			d, err = p.Scheme.Details.RSASSA()
		case tpm2.TPMAlgRSAPSS:
			var pss *tpm2.TPMSSigSchemeRSAPSS
			pss, err = p.Scheme.Details.RSAPSS()
			if pss != nil {
				d = (*tpm2.TPMSSigSchemeRSASSA)(pss)
			}
		default:
			err = fmt.Errorf("RSA scheme %#x", uint16(p.Scheme.Scheme))
		}
		if err != nil {
			return nil, fmt.Errorf("tpm: AK signing scheme: %w", err)
		}
		hashAlg = d.HashAlg
	case tpm2.TPMAlgECC:
		p, err := pub.Parameters.ECCDetail()
		if err != nil {
			return nil, err
		}
		if p.Scheme.Scheme != tpm2.TPMAlgECDSA {
			return nil, fmt.Errorf("tpm: AK ECC scheme %#x is not ECDSA", uint16(p.Scheme.Scheme))
		}
		d, err := p.Scheme.Details.ECDSA()
		if err != nil {
			return nil, fmt.Errorf("tpm: AK signing scheme: %w", err)
		}
		hashAlg = d.HashAlg
	default:
		return nil, fmt.Errorf("tpm: AK type %#x", uint16(pub.Type))
	}
	h2, err := hashAlg.Hash()
	if err != nil || (h2 != crypto.SHA256 && h2 != crypto.SHA384 && h2 != crypto.SHA512) {
		return nil, fmt.Errorf("tpm: AK signing hash %#x not supported", uint16(hashAlg))
	}
	key, err := tpm2.Pub(*pub)
	if err != nil {
		return nil, fmt.Errorf("tpm: AK public key: %w", err)
	}
	return &AK{
		tpm: t, handle: h, name: name, public: *pub, publicArea: tpm2.Marshal(*pub),
		key: key, hash: h2, persistent: persistent,
	}, nil
}

// Public returns the AK's public key (*rsa.PublicKey or *ecdsa.PublicKey).
func (ak *AK) Public() crypto.PublicKey { return ak.key }

// PublicKeyPEM returns the public key as a PEM "PUBLIC KEY" block (the form
// tpm2_checkquote -u and pinned-key verifier configurations take).
func (ak *AK) PublicKeyPEM() ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(ak.key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// PublicArea returns the marshalled TPMT_PUBLIC of the AK: a CA that issues
// AK certificates can check its attributes (restricted, fixedTPM, ...).
func (ak *AK) PublicArea() []byte { return bytes.Clone(ak.publicArea) }

// Name returns the AK's TPM name (nameAlg ‖ hash of the public area), as
// TPMS_ATTEST.qualifiedSigner refers to it.
func (ak *AK) Name() []byte { return bytes.Clone(ak.name.Buffer) }

// Handle returns the AK's handle: persistent (0x81…) or transient (0x80…).
func (ak *AK) Handle() uint32 { return uint32(ak.handle) }

// Persistent reports whether the AK is persisted in the TPM.
func (ak *AK) Persistent() bool { return ak.persistent }

// TPM returns the TPM the AK lives in.
func (ak *AK) TPM() *TPM { return ak.tpm }

// Close flushes a transient AK. A persistent AK stays in the TPM.
func (ak *AK) Close() error {
	ak.mu.Lock()
	defer ak.mu.Unlock()
	if ak.closed || ak.persistent {
		ak.closed = true
		return nil
	}
	ak.closed = true
	return ak.tpm.do(context.Background(), func(tr transport.TPM) error {
		_, err := (tpm2.FlushContext{FlushHandle: ak.handle}).Execute(tr)
		return err
	})
}

func (ak *AK) authHandle() tpm2.AuthHandle {
	return tpm2.AuthHandle{Handle: ak.handle, Name: ak.name, Auth: tpm2.PasswordAuth(nil)}
}

// Quote is a TPM quote with the PCR values it covers.
type Quote struct {
	Attest    []byte    // marshalled TPMS_ATTEST (TpmResponse.quoted, tpm2_quote -m)
	Signature []byte    // marshalled TPMT_SIGNATURE (TpmResponse.signature, tpm2_quote -s)
	PCRs      PCRValues // the quoted PCRs of the SHA-256 bank
}

// maxQuoteTries bounds re-quoting when a PCR changes between reading the
// values and quoting (on a real system IMA extends PCR 10 at any time).
const maxQuoteTries = 3

// Quote reads the PCRs in m, quotes them over qualifyingData and checks that
// the quote's PCR digest is the digest of the values read, retrying if a PCR
// changed in between. The TPM is held for the whole sequence.
func (ak *AK) Quote(ctx context.Context, qualifyingData []byte, m PCRMask) (*Quote, error) {
	if m == 0 || m&^MaskAll != 0 {
		return nil, fmt.Errorf("tpm: bad PCR mask %#x", uint32(m))
	}
	var out *Quote
	err := ak.tpm.do(ctx, func(tr transport.TPM) error {
		for range maxQuoteTries {
			vals, err := readPCRs(tr, m)
			if err != nil {
				return err
			}
			rsp, err := tpm2.Quote{
				SignHandle:     ak.authHandle(),
				QualifyingData: tpm2.TPM2BData{Buffer: qualifyingData},
				InScheme:       tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
				PCRSelect:      selection(m),
			}.Execute(tr)
			if err != nil {
				return fmt.Errorf("tpm: quote: %w", err)
			}
			att, err := ParseAttest(rsp.Quoted.Bytes())
			if err != nil {
				return fmt.Errorf("tpm: the TPM's quote: %w", err)
			}
			if bytes.Equal(pcrDigest(ak.hash, vals, m), att.Quote.PCRDigest.Buffer) {
				out = &Quote{Attest: att.Signed, Signature: tpm2.Marshal(rsp.Signature), PCRs: vals}
				return nil
			}
		}
		return fmt.Errorf("tpm: PCRs kept changing while quoting")
	})
	return out, err
}

// selection is the TPML_PCR_SELECTION of m in the SHA-256 bank.
func selection(m PCRMask) tpm2.TPMLPCRSelection {
	return tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{
		Hash:      tpm2.TPMAlgSHA256,
		PCRSelect: []byte{byte(m), byte(m >> 8), byte(m >> 16)},
	}}}
}

// pcrDigest is the digest a quote carries for the PCRs in m: h over their
// values concatenated in ascending PCR order.
func pcrDigest(h crypto.Hash, v PCRValues, m PCRMask) []byte {
	d := h.New()
	for _, i := range m.Indices() {
		d.Write(v[i])
	}
	return d.Sum(nil)
}

// ReadPCRs reads the PCRs in m from the SHA-256 bank.
func (t *TPM) ReadPCRs(ctx context.Context, m PCRMask) (PCRValues, error) {
	if m == 0 || m&^MaskAll != 0 {
		return nil, fmt.Errorf("tpm: bad PCR mask %#x", uint32(m))
	}
	var out PCRValues
	err := t.do(ctx, func(tr transport.TPM) error {
		var err error
		out, err = readPCRs(tr, m)
		return err
	})
	return out, err
}

// readPCRs reads the PCRs in m; TPM2_PCR_Read returns at most 8 per call.
func readPCRs(tr transport.TPM, m PCRMask) (PCRValues, error) {
	out := make(PCRValues, bits.OnesCount32(uint32(m)))
	left := m
	for left != 0 {
		rsp, err := (tpm2.PCRRead{PCRSelectionIn: selection(left)}).Execute(tr)
		if err != nil {
			return nil, fmt.Errorf("tpm: read PCRs: %w", err)
		}
		var got []int
		for _, s := range rsp.PCRSelectionOut.PCRSelections {
			if s.Hash != tpm2.TPMAlgSHA256 {
				continue
			}
			for b, v := range s.PCRSelect {
				for bit := range 8 {
					if v&(1<<bit) != 0 {
						got = append(got, b*8+bit)
					}
				}
			}
		}
		if len(got) == 0 || len(got) != len(rsp.PCRValues.Digests) {
			return nil, fmt.Errorf("tpm: the SHA-256 PCR bank does not have PCRs %v", left)
		}
		for k, i := range got {
			if !left.Has(i) || len(rsp.PCRValues.Digests[k].Buffer) != pcrSize {
				return nil, fmt.Errorf("tpm: PCR read returned an unexpected PCR %d", i)
			}
			out[i] = bytes.Clone(rsp.PCRValues.Digests[k].Buffer)
			left &^= 1 << i
		}
	}
	return out, nil
}

// ExtendPCR extends PCR i of the SHA-256 bank with digest (32 bytes), for
// tests and for measuring components into application PCRs.
func (t *TPM) ExtendPCR(ctx context.Context, i int, digest []byte) error {
	if i < 0 || i >= NumPCRs || len(digest) != pcrSize {
		return fmt.Errorf("tpm: bad PCR extend of PCR %d", i)
	}
	return t.do(ctx, func(tr transport.TPM) error {
		_, err := tpm2.PCRExtend{
			PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(i), Auth: tpm2.PasswordAuth(nil)},
			Digests:   tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{{HashAlg: tpm2.TPMAlgSHA256, Digest: digest}}},
		}.Execute(tr)
		if err != nil {
			return fmt.Errorf("tpm: extend PCR %d: %w", i, err)
		}
		return nil
	})
}

// ResetPCR resets a resettable PCR (16 and 23 on PC Client TPMs).
func (t *TPM) ResetPCR(ctx context.Context, i int) error {
	return t.do(ctx, func(tr transport.TPM) error {
		_, err := tpm2.PCRReset{PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(i), Auth: tpm2.PasswordAuth(nil)}}.Execute(tr)
		if err != nil {
			return fmt.Errorf("tpm: reset PCR %d: %w", i, err)
		}
		return nil
	})
}

// Signer returns a crypto.Signer for the AK that signs whole messages
// (crypto.MessageSigner): the TPM hashes the message itself and signs only
// if it does not start with TPM_GENERATED_VALUE, so the AK stays unable to
// forge a quote. Sign with a bare digest fails, as a restricted key cannot
// sign digests it did not compute. ctx bounds the TPM commands.
func (ak *AK) Signer(ctx context.Context) crypto.MessageSigner {
	return &akSigner{ak: ak, ctx: ctx}
}

type akSigner struct {
	ak  *AK
	ctx context.Context
}

func (s *akSigner) Public() crypto.PublicKey { return s.ak.key }

func (s *akSigner) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) {
	return nil, errors.New("tpm: a restricted AK signs only messages it hashes itself (use SignMessage)")
}

// SignMessage hashes msg in the TPM (TPM2_Hash) and signs the digest with the validation ticket. RSA signatures
// are PKCS #1 v1.5 (PSS for an RSAPSS key), ECDSA signatures ASN.1 DER, as
// crypto/x509 expects.
func (s *akSigner) SignMessage(_ io.Reader, msg []byte, opts crypto.SignerOpts) ([]byte, error) {
	ak := s.ak
	if opts.HashFunc() != ak.hash {
		return nil, fmt.Errorf("tpm: the AK signs with %v, not %v", ak.hash, opts.HashFunc())
	}
	var sig *tpm2.TPMTSignature
	err := ak.tpm.do(s.ctx, func(tr transport.TPM) error {
		hashAlg := tpm2.TPMAlgSHA256
		switch ak.hash {
		case crypto.SHA384:
			hashAlg = tpm2.TPMAlgSHA384
		case crypto.SHA512:
			hashAlg = tpm2.TPMAlgSHA512
		}
		digest, ticket, err := tpmHash(tr, msg, hashAlg)
		if err != nil {
			return err
		}
		rsp, err := tpm2.Sign{
			KeyHandle:  ak.authHandle(),
			Digest:     tpm2.TPM2BDigest{Buffer: digest},
			InScheme:   tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
			Validation: *ticket,
		}.Execute(tr)
		if err != nil {
			return fmt.Errorf("tpm: sign: %w", err)
		}
		sig = &rsp.Signature
		return nil
	})
	if err != nil {
		return nil, err
	}
	switch sig.SigAlg {
	case tpm2.TPMAlgRSASSA:
		r, err := sig.Signature.RSASSA()
		if err != nil {
			return nil, err
		}
		return r.Sig.Buffer, nil
	case tpm2.TPMAlgRSAPSS:
		r, err := sig.Signature.RSAPSS()
		if err != nil {
			return nil, err
		}
		return r.Sig.Buffer, nil
	case tpm2.TPMAlgECDSA:
		e, err := sig.Signature.ECDSA()
		if err != nil {
			return nil, err
		}
		return ecdsaASN1(e.SignatureR.Buffer, e.SignatureS.Buffer)
	}
	return nil, fmt.Errorf("tpm: unexpected signature scheme %#x", uint16(sig.SigAlg))
}

// maxHashBuffer is TPM2B_MAX_BUFFER's usual capacity (MAX_DIGEST_BUFFER).
const maxHashBuffer = 1024

// tpmHash hashes msg in the TPM and returns the digest with the ticket that
// lets a restricted key sign it. A certificate request is a few hundred
// bytes, well within one TPM2_Hash.
func tpmHash(tr transport.TPM, msg []byte, alg tpm2.TPMAlgID) ([]byte, *tpm2.TPMTTKHashCheck, error) {
	if len(msg) > maxHashBuffer {
		return nil, nil, fmt.Errorf("tpm: message of %d bytes is too long to sign (max %d)", len(msg), maxHashBuffer)
	}
	rsp, err := tpm2.Hash{Data: tpm2.TPM2BMaxBuffer{Buffer: msg}, HashAlg: alg, Hierarchy: tpm2.TPMRHOwner}.Execute(tr)
	if err != nil {
		return nil, nil, fmt.Errorf("tpm: hash: %w", err)
	}
	return rsp.OutHash.Buffer, &rsp.Validation, nil
}

// keyOK reports whether key is an AK public key the verifier accepts.
func keyOK(key crypto.PublicKey) error {
	switch k := key.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return fmt.Errorf("RSA key of %d bits", k.N.BitLen())
		}
		return nil
	case *ecdsa.PublicKey:
		switch k.Curve.Params().BitSize {
		case 256, 384, 521:
			return nil
		}
		return fmt.Errorf("ECDSA curve %s", k.Curve.Params().Name)
	default:
		return fmt.Errorf("key type %T", key)
	}
}
