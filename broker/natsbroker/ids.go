package natsbroker

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"strings"
	"time"
)

// Ids are opaque. An id or a position names a sequence number of the
// stream, but a client must not learn from it how many events other
// channels got in between, nor whether they got any: the stream numbers
// every event of every channel. So an id is one AES block, encrypted with
// a key kept in the stream's description, and written in base64url (22
// characters):
//
//	bytes 0-6   the sequence number (2^56 of them: 2,000 years at a
//	            million events a second)
//	bytes 7-11  the low 40 bits of the stream's creation time in µs
//	bytes 12-15 zero in an event's id; random in a position
//
// An event has one id wherever it is read, as every hub and replay must
// give it the same. A position (a new stream's, a reset's) gets a random
// part, so that two positions of one sequence number differ and a reader
// comparing them learns nothing. Decoding checks the creation time, so a
// forged id is taken for a position once in 2^40, and an id of a deleted
// stream, or of another key, never.

// idKeyPrefix starts the part of the stream's description that holds the
// id key.
const idKeyPrefix = "id key "

var errNoKey = errors.New("no id key in the stream's description")

// idCodec makes and reads the ids of one stream incarnation.
type idCodec struct {
	block   cipher.Block
	created [5]byte // low 40 bits of the creation time in µs
	tag     string  // tells incarnations apart: key and creation time
}

func newIDCodec(key []byte, created time.Time) (*idCodec, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	c := &idCodec{block: block}
	var t [8]byte
	binary.BigEndian.PutUint64(t[:], uint64(created.UnixMicro()))
	copy(c.created[:], t[3:])
	sum := sha256.Sum256(append(append([]byte{}, key...), t[:]...))
	c.tag = hex.EncodeToString(sum[:6])
	return c, nil
}

// newIDKey returns a fresh key and the description that holds it.
func newIDKey(what string) ([]byte, string) {
	key := make([]byte, 16)
	rand.Read(key)
	return key, what + "; " + idKeyPrefix + base64.RawURLEncoding.EncodeToString(key)
}

// idKeyOf reads the id key in a stream's description.
func idKeyOf(description string) ([]byte, error) {
	_, enc, ok := strings.Cut(description, idKeyPrefix)
	if !ok {
		return nil, errNoKey
	}
	enc, _, _ = strings.Cut(enc, " ")
	key, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil || len(key) != 16 {
		return nil, errors.New("the id key in the stream's description is not 16 bytes of base64url")
	}
	return key, nil
}

// event returns the id of the event with sequence number seq.
func (c *idCodec) event(seq uint64) string { return c.encode(seq, false) }

// position returns an id that stands for seq, different at every call.
func (c *idCodec) position(seq uint64) string { return c.encode(seq, true) }

func (c *idCodec) encode(seq uint64, random bool) string {
	var b [aes.BlockSize]byte
	binary.BigEndian.PutUint64(b[:8], seq<<8)
	copy(b[7:12], c.created[:])
	if random {
		rand.Read(b[12:])
	}
	c.block.Encrypt(b[:], b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// decode returns the sequence number an id or position of this
// incarnation stands for.
func (c *idCodec) decode(id string) (uint64, bool) {
	if len(id) != 22 {
		return 0, false
	}
	var b [aes.BlockSize]byte
	if n, err := base64.RawURLEncoding.Decode(b[:], []byte(id)); err != nil || n != len(b) {
		return 0, false
	}
	c.block.Decrypt(b[:], b[:])
	if [5]byte(b[7:12]) != c.created {
		return 0, false
	}
	seq := binary.BigEndian.Uint64(b[:8]) >> 8
	return seq, true
}
