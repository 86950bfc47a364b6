package config

import (
	"bytes"
	_ "embed"
)

//go:embed example.yaml
var example []byte

// Example returns a commented configuration that sets every key to its
// default (with the optional sections commented out). Its file paths are
// relative: pki/server.pem, pki/server-key.pem, pki/ca.pem and
// pki/issuer-key.pem.
func Example() []byte { return bytes.Clone(example) }
