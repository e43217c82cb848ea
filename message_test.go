package ssehub_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/ssehub/ssehub"
)

func TestMessageNormalizeErrors(t *testing.T) {
	t.Parallel()
	data := json.RawMessage(`{"a":1}`)
	tests := []struct {
		name string
		msg  ssehub.Message
		want error
	}{
		{"LF in id", ssehub.Message{Data: data, ID: "a\nb"}, ssehub.ErrInvalidID},
		{"CR in id", ssehub.Message{Data: data, ID: "a\rb"}, ssehub.ErrInvalidID},
		{"NUL in id", ssehub.Message{Data: data, ID: "a\x00b"}, ssehub.ErrInvalidID},
		{"invalid UTF-8 in id", ssehub.Message{Data: data, ID: "a\xffb"}, ssehub.ErrInvalidID},
		{"id too long", ssehub.Message{Data: data, ID: strings.Repeat("i", ssehub.MaxIDLen+1)}, ssehub.ErrInvalidID},
		{"LF in type", ssehub.Message{Data: data, Type: "a\nb"}, ssehub.ErrInvalidType},
		{"CR in type", ssehub.Message{Data: data, Type: "a\rb"}, ssehub.ErrInvalidType},
		{"NUL in type", ssehub.Message{Data: data, Type: "a\x00b"}, ssehub.ErrInvalidType},
		{"invalid UTF-8 in type", ssehub.Message{Data: data, Type: "\xc3"}, ssehub.ErrInvalidType},
		{"type too long", ssehub.Message{Data: data, Type: strings.Repeat("t", ssehub.MaxTypeLen+1)}, ssehub.ErrInvalidType},
		{"reserved type", ssehub.Message{Data: data, Type: ssehub.ResetType}, ssehub.ErrInvalidType},
		{"reserved prefix", ssehub.Message{Data: data, Type: "ssehub.anything"}, ssehub.ErrInvalidType},
		{"negative retry", ssehub.Message{Data: data, Retry: -1}, ssehub.ErrInvalidRetry},
		{"missing data", ssehub.Message{}, ssehub.ErrInvalidData},
		{"empty data", ssehub.Message{Data: json.RawMessage{}}, ssehub.ErrInvalidData},
		{"invalid JSON", ssehub.Message{Data: json.RawMessage(`{"a":`)}, ssehub.ErrInvalidData},
		{"bare word", ssehub.Message{Data: json.RawMessage(`hello`)}, ssehub.ErrInvalidData},
		{"two JSON values", ssehub.Message{Data: json.RawMessage(`1 2`)}, ssehub.ErrInvalidData},
		{"invalid UTF-8 in data", ssehub.Message{Data: json.RawMessage("\"a\xffb\"")}, ssehub.ErrInvalidData},
		{"space in channel", ssehub.Message{Channel: "a b", Data: data}, ssehub.ErrInvalidChannel},
		{"star in channel", ssehub.Message{Channel: "a.*", Data: data}, ssehub.ErrInvalidChannel},
		{"gt in channel", ssehub.Message{Channel: "a.>", Data: data}, ssehub.ErrInvalidChannel},
		{"non-ASCII channel", ssehub.Message{Channel: "café", Data: data}, ssehub.ErrInvalidChannel},
		{"query characters in channel", ssehub.Message{Channel: "a&b=c", Data: data}, ssehub.ErrInvalidChannel},
		{"LF in channel", ssehub.Message{Channel: "a\n", Data: data}, ssehub.ErrInvalidChannel},
		{"channel too long", ssehub.Message{Channel: strings.Repeat("c", ssehub.MaxChannelLen+1), Data: data}, ssehub.ErrInvalidChannel},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m := tt.msg
			err := m.Normalize()
			if !errors.Is(err, tt.want) {
				t.Fatalf("Normalize() = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestMessageNormalizeValid(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		msg  ssehub.Message
		want ssehub.Message
	}{
		{
			name: "default channel",
			msg:  ssehub.Message{Data: json.RawMessage(`1`)},
			want: ssehub.Message{Channel: ssehub.DefaultChannel, Data: json.RawMessage(`1`)},
		},
		{
			name: "compacted",
			msg:  ssehub.Message{Channel: "c", Data: json.RawMessage("{ \"a\" : [1, 2],\n  \"b\":\t\"x y\" }\r\n")},
			want: ssehub.Message{Channel: "c", Data: json.RawMessage(`{"a":[1,2],"b":"x y"}`)},
		},
		{
			name: "escaped newline kept escaped",
			msg:  ssehub.Message{Channel: "c", Data: json.RawMessage(`"line1\nline2"`)},
			want: ssehub.Message{Channel: "c", Data: json.RawMessage(`"line1\nline2"`)},
		},
		{
			name: "every field",
			msg:  ssehub.Message{Channel: "Az09_-.:@/", Data: json.RawMessage(` null `), Type: "cool", ID: "1795238353.220689", Retry: 6000},
			want: ssehub.Message{Channel: "Az09_-.:@/", Data: json.RawMessage(`null`), Type: "cool", ID: "1795238353.220689", Retry: 6000},
		},
		{
			name: "longest fields",
			msg:  ssehub.Message{Channel: strings.Repeat("c", ssehub.MaxChannelLen), Data: json.RawMessage(`"😀\u2028"`), Type: strings.Repeat("t", ssehub.MaxTypeLen), ID: strings.Repeat("i", ssehub.MaxIDLen)},
			want: ssehub.Message{Channel: strings.Repeat("c", ssehub.MaxChannelLen), Data: json.RawMessage(`"😀\u2028"`), Type: strings.Repeat("t", ssehub.MaxTypeLen), ID: strings.Repeat("i", ssehub.MaxIDLen)},
		},
		{
			name: "leading space and reserved-looking names",
			msg:  ssehub.Message{Channel: "c", Data: json.RawMessage(`" x"`), Type: " ssehub", ID: " 1"},
			want: ssehub.Message{Channel: "c", Data: json.RawMessage(`" x"`), Type: " ssehub", ID: " 1"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m := tt.msg
			if err := m.Normalize(); err != nil {
				t.Fatalf("Normalize() = %v", err)
			}
			if m.Channel != tt.want.Channel || string(m.Data) != string(tt.want.Data) || m.Type != tt.want.Type || m.ID != tt.want.ID || m.Retry != tt.want.Retry {
				t.Fatalf("Normalize() gave %+v (data %s), want %+v (data %s)", m, m.Data, tt.want, tt.want.Data)
			}
		})
	}
}

func TestValidChannel(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		ok   bool
	}{
		{"sse", true},
		{"cool_channel", true},
		{"user:42/inbox@eu-1.x", true},
		{strings.Repeat("a", ssehub.MaxChannelLen), true},
		{strings.Repeat("a", ssehub.MaxChannelLen+1), false},
		{"", false},
		{" ", false},
		{"a\tb", false},
		{"a*", false},
		{">", false},
		{"a?b", false},
		{"a#b", false},
		{"a%20b", false},
		{"a+b", false},
		{"ü", false},
		{"a\x00", false},
	}
	for _, tt := range tests {
		err := ssehub.ValidChannel(tt.name)
		if tt.ok && err != nil {
			t.Errorf("ValidChannel(%q) = %v, want nil", tt.name, err)
		}
		if !tt.ok && !errors.Is(err, ssehub.ErrInvalidChannel) {
			t.Errorf("ValidChannel(%q) = %v, want ErrInvalidChannel", tt.name, err)
		}
	}
}

func TestErrorStatus(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err    error
		status int
		code   string
	}{
		{ssehub.ErrInvalidChannel, http.StatusBadRequest, "invalid_channel"},
		{ssehub.ErrInvalidID, http.StatusBadRequest, "invalid_id"},
		{ssehub.ErrInvalidType, http.StatusBadRequest, "invalid_type"},
		{ssehub.ErrInvalidRetry, http.StatusBadRequest, "invalid_retry"},
		{ssehub.ErrInvalidData, http.StatusBadRequest, "invalid_data"},
		{ssehub.ErrTooManyChannels, http.StatusBadRequest, "too_many_channels"},
		{ssehub.ErrBadRequest, http.StatusBadRequest, "bad_request"},
		{ssehub.ErrMessageTooLarge, http.StatusRequestEntityTooLarge, "too_large"},
		{ssehub.ErrClosed, http.StatusServiceUnavailable, "closing"},
		{ssehub.ErrUnavailable, http.StatusServiceUnavailable, "unavailable"},
		{context.DeadlineExceeded, http.StatusServiceUnavailable, "timeout"},
		{errors.New("something else"), http.StatusInternalServerError, "internal"},
	}
	for _, tt := range tests {
		for _, err := range []error{tt.err, fmt.Errorf("outer: %w", fmt.Errorf("inner %q: %w", "x", tt.err))} {
			status, code := ssehub.ErrorStatus(err)
			if status != tt.status || code != tt.code {
				t.Errorf("ErrorStatus(%v) = %d %q, want %d %q", err, status, code, tt.status, tt.code)
			}
		}
	}
}

func TestDecodePublishRequest(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		body string
		want ssehub.Message
		err  error
	}{
		{"minimal", `{"data":{"a":1}}`, ssehub.Message{Channel: "sse", Data: json.RawMessage(`{"a":1}`)}, nil},
		{"all fields", `{"channel":"c","data":[1, 2],"type":"t","id":"x","retry":10}`, ssehub.Message{Channel: "c", Data: json.RawMessage(`[1,2]`), Type: "t", ID: "x", Retry: 10}, nil},
		{"numeric id", `{"data":1,"id":12345}`, ssehub.Message{Channel: "sse", Data: json.RawMessage(`1`), ID: "12345"}, nil},
		{"epoch float id kept as written", `{"data":1,"id":1795238353.2229617}`, ssehub.Message{Channel: "sse", Data: json.RawMessage(`1`), ID: "1795238353.2229617"}, nil},
		{"null id", `{"data":1,"id":null}`, ssehub.Message{Channel: "sse", Data: json.RawMessage(`1`)}, nil},
		{"trailing white space", "{\"data\":1}\n\n", ssehub.Message{Channel: "sse", Data: json.RawMessage(`1`)}, nil},
		{"empty body", ``, ssehub.Message{}, ssehub.ErrBadRequest},
		{"not JSON", `data=1`, ssehub.Message{}, ssehub.ErrBadRequest},
		{"not an object", `[1]`, ssehub.Message{}, ssehub.ErrBadRequest},
		{"truncated", `{"data":1`, ssehub.Message{}, ssehub.ErrBadRequest},
		{"two values", `{"data":1}{"data":2}`, ssehub.Message{}, ssehub.ErrBadRequest},
		{"unknown field", `{"data":1,"event":"x"}`, ssehub.Message{}, ssehub.ErrBadRequest},
		{"missing data", `{"channel":"c"}`, ssehub.Message{}, ssehub.ErrInvalidData},
		{"bool id", `{"data":1,"id":true}`, ssehub.Message{}, ssehub.ErrInvalidID},
		{"object id", `{"data":1,"id":{}}`, ssehub.Message{}, ssehub.ErrInvalidID},
		{"LF in id", `{"data":1,"id":"a\nb"}`, ssehub.Message{}, ssehub.ErrInvalidID},
		{"bad type", `{"data":1,"type":"a\rb"}`, ssehub.Message{}, ssehub.ErrInvalidType},
		{"bad channel", `{"data":1,"channel":"a b"}`, ssehub.Message{}, ssehub.ErrInvalidChannel},
		{"negative retry", `{"data":1,"retry":-5}`, ssehub.Message{}, ssehub.ErrInvalidRetry},
		{"fractional retry", `{"data":1,"retry":1.5}`, ssehub.Message{}, ssehub.ErrBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m, err := ssehub.DecodePublishRequest(strings.NewReader(tt.body))
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("DecodePublishRequest(%s) = %v, want %v", tt.body, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("DecodePublishRequest(%s) = %v", tt.body, err)
			}
			if m.Channel != tt.want.Channel || string(m.Data) != string(tt.want.Data) || m.Type != tt.want.Type || m.ID != tt.want.ID || m.Retry != tt.want.Retry {
				t.Fatalf("DecodePublishRequest(%s) = %+v (data %s), want %+v (data %s)", tt.body, m, m.Data, tt.want, tt.want.Data)
			}
		})
	}
}
