package auth

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"unicode/utf8"
)

// ReadSecretFile reads an HMAC secret for JWTs from a file. A text file
// (head -c 32 /dev/urandom | base64 > secret) is read without the line
// break that ends it; a binary one is read whole, since its last byte may
// be a line feed. The secret holds at least MinSecretLen bytes.
func ReadSecretFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	if t := bytes.TrimRight(b, "\r\n"); isText(t) {
		b = t
	}
	if len(b) < MinSecretLen {
		return nil, fmt.Errorf("auth: the secret in %s is shorter than %d bytes", path, MinSecretLen)
	}
	return b, nil
}

// isText reports whether b is UTF-8 text without control characters
// other than tabs.
func isText(b []byte) bool {
	if !utf8.Valid(b) {
		return false
	}
	for _, c := range b {
		if (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// ReadTokenFile reads a static token from a file, without surrounding
// white space.
func ReadTokenFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("auth: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("auth: %s holds no token", path)
	}
	return tok, nil
}

// ReadPublicKeyFile reads the public key that verifies JWTs from a PEM
// file: a "PUBLIC KEY" (RSA, ECDSA or Ed25519), an "RSA PUBLIC KEY", or a
// "CERTIFICATE" whose key is used. A file holding a private key is refused:
// the hub needs only the public half.
func ReadPublicKeyFile(path string) (any, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	key, err := ParsePublicKeyPEM(b)
	if err != nil {
		return nil, fmt.Errorf("auth: %s: %w", path, err)
	}
	return key, nil
}

// ParsePublicKeyPEM parses the first PEM block of b as ReadPublicKeyFile
// does.
func ParsePublicKeyPEM(b []byte) (any, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("no PEM block found")
	}
	var (
		key any
		err error
	)
	switch block.Type {
	case "PUBLIC KEY":
		key, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		key, err = x509.ParsePKCS1PublicKey(block.Bytes)
	case "CERTIFICATE":
		var cert *x509.Certificate
		if cert, err = x509.ParseCertificate(block.Bytes); err == nil {
			key = cert.PublicKey
		}
	default:
		if strings.Contains(block.Type, "PRIVATE KEY") {
			return nil, errors.New("holds a private key; give the hub the public key only")
		}
		return nil, fmt.Errorf("PEM block %q is not a public key", block.Type)
	}
	if err != nil {
		return nil, err
	}
	switch key.(type) {
	case *rsa.PublicKey, *ecdsa.PublicKey, ed25519.PublicKey:
		return key, nil
	}
	return nil, fmt.Errorf("a %T key cannot verify JWTs", key)
}
