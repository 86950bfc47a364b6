package tpm

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/bits"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/idscp2-sidecar/idscp2-sidecar/attestation/tpm/tpmpb"
)

// NumPCRs is the number of PCRs the suite knows (PC Client TPMs have 24).
const NumPCRs = 24

// PCRBank is the PCR bank quoted and compared: SHA-256.
const PCRBank = "SHA256"

// pcrSize is the digest size of PCRBank.
const pcrSize = 32

// PCRMask selects PCRs: bit i set means PCR i. It is the challenge's
// pcr_indices.
type PCRMask uint32

// Masks of the attestation types.
const (
	MaskBasic PCRMask = 0x000fff // PCR 0–11
	MaskAll   PCRMask = 0xffffff // PCR 0–23
)

// Indices returns the selected PCRs in ascending order.
func (m PCRMask) Indices() []int {
	out := make([]int, 0, bits.OnesCount32(uint32(m)))
	for i := range 32 {
		if m&(1<<i) != 0 {
			out = append(out, i)
		}
	}
	return out
}

// Has reports whether PCR i is selected.
func (m PCRMask) Has(i int) bool { return i >= 0 && i < 32 && m&(1<<i) != 0 }

// String lists the selected PCRs, e.g. "0-11,16".
func (m PCRMask) String() string {
	var parts []string
	idx := m.Indices()
	for i := 0; i < len(idx); {
		j := i
		for j+1 < len(idx) && idx[j+1] == idx[j]+1 {
			j++
		}
		if j == i {
			parts = append(parts, strconv.Itoa(idx[i]))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", idx[i], idx[j]))
		}
		i = j + 1
	}
	return strings.Join(parts, ",")
}

// MaskOf returns the mask selecting the given PCRs.
func MaskOf(pcrs ...int) (PCRMask, error) {
	var m PCRMask
	for _, p := range pcrs {
		if p < 0 || p >= NumPCRs {
			return 0, fmt.Errorf("tpm: PCR %d out of range 0-%d", p, NumPCRs-1)
		}
		m |= 1 << p
	}
	return m, nil
}

// ParseMask parses a PCR list such as "0-7,10,16" or "all"/"basic".
func ParseMask(s string) (PCRMask, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "basic":
		return MaskBasic, nil
	case "all":
		return MaskAll, nil
	case "":
		return 0, fmt.Errorf("tpm: empty PCR list")
	}
	var m PCRMask
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			return 0, fmt.Errorf("tpm: bad PCR %q", part)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil {
				return 0, fmt.Errorf("tpm: bad PCR range %q", part)
			}
		}
		if a < 0 || b >= NumPCRs || a > b {
			return 0, fmt.Errorf("tpm: PCR range %q outside 0-%d", part, NumPCRs-1)
		}
		for i := a; i <= b; i++ {
			m |= 1 << i
		}
	}
	return m, nil
}

// MaskFor returns the PCRs an attestation type selects, as the reference
// defines them: BASIC 0–11, ALL 0–23, ADVANCED the non-empty mask (which
// must select PCRs 0–23 only). mask is ignored for BASIC and ALL.
func MaskFor(atype tpmpb.IdsAttestationType, mask uint32) (PCRMask, error) {
	switch atype {
	case tpmpb.IdsAttestationType_BASIC:
		return MaskBasic, nil
	case tpmpb.IdsAttestationType_ALL:
		return MaskAll, nil
	case tpmpb.IdsAttestationType_ADVANCED:
		if mask == 0 {
			return 0, fmt.Errorf("ADVANCED attestation with an empty PCR mask")
		}
		if mask&^uint32(MaskAll) != 0 {
			return 0, fmt.Errorf("PCR mask %#x selects PCRs above %d", mask, NumPCRs-1)
		}
		return PCRMask(mask), nil
	default:
		return 0, fmt.Errorf("unknown attestation type %d", atype)
	}
}

// PCRValues maps PCR indices to their values in the SHA-256 bank.
type PCRValues map[int][]byte

// Mask returns the mask of the PCRs present.
func (v PCRValues) Mask() PCRMask {
	var m PCRMask
	for i := range v {
		if i >= 0 && i < 32 {
			m |= 1 << i
		}
	}
	return m
}

// Select returns the values of the PCRs in m; it fails if one is missing.
func (v PCRValues) Select(m PCRMask) (PCRValues, error) {
	out := make(PCRValues, bits.OnesCount32(uint32(m)))
	for _, i := range m.Indices() {
		val, ok := v[i]
		if !ok {
			return nil, fmt.Errorf("no value for PCR %d", i)
		}
		out[i] = val
	}
	return out, nil
}

// sorted returns the indices present, ascending.
func (v PCRValues) sorted() []int {
	idx := make([]int, 0, len(v))
	for i := range v {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	return idx
}

// GoldenValues are the expected PCR values of a peer.
type GoldenValues struct {
	// PCRs holds the expected SHA-256 bank values; PCRs without a value
	// are not checked, but a verifier refuses a peer if a PCR it asks for has
	// no golden value.
	PCRs PCRValues
}

// goldenFile is the JSON form of a golden-values file:
//
//	{"hashAlg": "SHA256", "pcrs": {"0": "<64 hex digits>", ...}}
type goldenFile struct {
	HashAlg string            `json:"hashAlg"`
	PCRs    map[string]string `json:"pcrs"`
}

// ParseGoldenValues parses a golden-values file (see WriteGoldenValues).
func ParseGoldenValues(data []byte) (*GoldenValues, error) {
	var f goldenFile
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("tpm: golden values: %w", err)
	}
	if !strings.EqualFold(f.HashAlg, PCRBank) {
		return nil, fmt.Errorf("tpm: golden values: hashAlg %q, only %s is supported", f.HashAlg, PCRBank)
	}
	g := &GoldenValues{PCRs: make(PCRValues, len(f.PCRs))}
	for k, h := range f.PCRs {
		i, err := strconv.Atoi(k)
		if err != nil || i < 0 || i >= NumPCRs {
			return nil, fmt.Errorf("tpm: golden values: bad PCR index %q", k)
		}
		b, err := hex.DecodeString(h)
		if err != nil || len(b) != pcrSize {
			return nil, fmt.Errorf("tpm: golden values: PCR %d: want %d bytes of hex", i, pcrSize)
		}
		g.PCRs[i] = b
	}
	if len(g.PCRs) == 0 {
		return nil, fmt.Errorf("tpm: golden values: no PCRs")
	}
	return g, nil
}

// LoadGoldenValues reads a golden-values file.
func LoadGoldenValues(path string) (*GoldenValues, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tpm: %w", err)
	}
	return ParseGoldenValues(data)
}

// MarshalGoldenValues returns the golden-values file for v (indented JSON,
// lowercase hex, PCRs in ascending order).
func MarshalGoldenValues(v PCRValues) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString("{\n  \"hashAlg\": \"" + PCRBank + "\",\n  \"pcrs\": {")
	for n, i := range v.sorted() {
		if i < 0 || i >= NumPCRs || len(v[i]) != pcrSize {
			return nil, fmt.Errorf("tpm: PCR %d: not a %s value", i, PCRBank)
		}
		if n > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "\n    \"%d\": \"%x\"", i, v[i])
	}
	b.WriteString("\n  }\n}\n")
	return b.Bytes(), nil
}

// WriteGoldenValues writes v as a golden-values file at path (mode 0644),
// replacing it atomically.
func WriteGoldenValues(path string, v PCRValues) error {
	data, err := MarshalGoldenValues(v)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".golden-*")
	if err != nil {
		return fmt.Errorf("tpm: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("tpm: %w", err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return fmt.Errorf("tpm: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("tpm: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("tpm: %w", err)
	}
	return nil
}

// ClaimGoldenValues is the DAT claim the reference verifier takes golden
// values from.
const ClaimGoldenValues = "pcrGoldenValues"

// GoldenValuesClaim returns the value of the DAT claim pcrGoldenValues for v:
// exactly 24 base64 strings, element i the value of PCR i, as the reference
// verifier reads it. v must hold all 24 PCRs.
func GoldenValuesClaim(v PCRValues) ([]string, error) {
	out := make([]string, NumPCRs)
	for i := range NumPCRs {
		val, ok := v[i]
		if !ok {
			return nil, fmt.Errorf("tpm: %s needs all %d PCRs, PCR %d is missing", ClaimGoldenValues, NumPCRs, i)
		}
		out[i] = base64.StdEncoding.EncodeToString(val)
	}
	return out, nil
}

// GoldenValuesFromClaim parses the DAT claim pcrGoldenValues (as decoded
// from JSON: a list of 24 strings) the way the reference does: standard or
// URL-safe base64, padded or not, element i the value of PCR i.
func GoldenValuesFromClaim(claim any) (*GoldenValues, error) {
	var list []string
	switch c := claim.(type) {
	case nil:
		return nil, fmt.Errorf("DAT has no %s claim", ClaimGoldenValues)
	case []string:
		list = c
	case []any:
		list = make([]string, len(c))
		for i, e := range c {
			s, ok := e.(string)
			if !ok {
				return nil, fmt.Errorf("%s[%d] is not a string", ClaimGoldenValues, i)
			}
			list[i] = s
		}
	default:
		return nil, fmt.Errorf("%s is not a list of strings", ClaimGoldenValues)
	}
	if len(list) != NumPCRs {
		return nil, fmt.Errorf("%s has %d values, want %d", ClaimGoldenValues, len(list), NumPCRs)
	}
	g := &GoldenValues{PCRs: make(PCRValues, NumPCRs)}
	for i, s := range list {
		b, err := decodeBase64(s)
		if err != nil {
			return nil, fmt.Errorf("%s[%d]: %v", ClaimGoldenValues, i, err)
		}
		g.PCRs[i] = b
	}
	return g, nil
}

func decodeBase64(s string) ([]byte, error) {
	s = strings.TrimRight(s, "=")
	if strings.ContainsAny(s, "-_") {
		return base64.RawURLEncoding.DecodeString(s)
	}
	return base64.RawStdEncoding.DecodeString(s)
}

// mismatch returns the PCRs in m whose values differ from g's (or that g
// lacks), ascending.
func (g *GoldenValues) mismatch(v PCRValues, m PCRMask) (differ, missing []int) {
	for _, i := range m.Indices() {
		want, ok := g.PCRs[i]
		if !ok {
			missing = append(missing, i)
			continue
		}
		if !bytes.Equal(want, v[i]) {
			differ = append(differ, i)
		}
	}
	return differ, missing
}

// pcrList converts values to the wire form, ascending by index.
func pcrList(v PCRValues) []*tpmpb.Pcr {
	out := make([]*tpmpb.Pcr, 0, len(v))
	for _, i := range v.sorted() {
		n := int32(i)
		out = append(out, &tpmpb.Pcr{Number: &n, Value: slices.Clone(v[i])})
	}
	return out
}
