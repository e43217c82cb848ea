package auth_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ssehub/ssehub/auth"
)

// TestReadSecretFile: a text secret loses its final line break, a binary
// one is read whole even when its last byte is a line feed, which
// `head -c 32 /dev/urandom > secret` writes once in 256 runs.
func TestReadSecretFile(t *testing.T) {
	t.Parallel()
	binary := append(bytes.Repeat([]byte{0xfe, 0x01}, 15), 0x00, '\n') // 32 bytes
	text := strings.Repeat("k", 43) + "="
	cases := []struct {
		name    string
		content []byte
		want    []byte // nil: refused
	}{
		{"text with a line break", []byte(text + "\n"), []byte(text)},
		{"text with CRLF", []byte(text + "\r\n"), []byte(text)},
		{"text without a line break", []byte(text), []byte(text)},
		{"binary ending in a line feed", binary, binary},
		{"binary ending in CR", append(binary[:31:31], '\r'), append(binary[:31:31], '\r')},
		{"short text", []byte(strings.Repeat("k", 31) + "\n"), nil},
		{"short binary", binary[:31], nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "secret")
			if err := os.WriteFile(path, c.content, 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := auth.ReadSecretFile(path)
			if c.want == nil {
				if err == nil || !strings.Contains(err.Error(), "shorter than 32 bytes") {
					t.Fatalf("got %q, %v; want a refusal", got, err)
				}
				return
			}
			if err != nil || !bytes.Equal(got, c.want) {
				t.Fatalf("got %q, %v; want %q", got, err, c.want)
			}
		})
	}
}
