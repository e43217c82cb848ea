package ssehub_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/internal/hubtest"
)

// TestNoFieldInjection publishes, over HTTP, CR, LF and NUL in every field
// of a message, and checks that the hub refuses them, and that what it
// accepts reaches every subscriber as exactly one event with the fields
// the publisher sent: nothing a publisher sends becomes another field or
// another event in someone's stream.
func TestNoFieldInjection(t *testing.T) {
	t.Parallel()
	_, srv := hubtest.Serve(t, ssehub.Config{})

	refused := []struct{ name, body string }{}
	for _, bad := range []string{`\r`, `\n`, `\r\n`, `\u0000`, `x\n\ndata: evil`, `x\revent: evil`} {
		refused = append(refused,
			struct{ name, body string }{"channel " + bad, `{"channel":"victim` + bad + `","data":1}`},
			struct{ name, body string }{"type " + bad, `{"channel":"victim","type":"t` + bad + `","data":1}`},
			struct{ name, body string }{"id " + bad, `{"channel":"victim","id":"7` + bad + `","data":1}`},
		)
	}
	refused = append(refused, []struct{ name, body string }{
		{"raw LF in a data string", "{\"channel\":\"victim\",\"data\":\"a\nevent: evil\"}"},
		{"raw CR in a data string", "{\"channel\":\"victim\",\"data\":\"a\rdata: evil\"}"},
		{"raw NUL in a data string", "{\"channel\":\"victim\",\"data\":\"a\x00b\"}"},
		{"data not JSON", "{\"channel\":\"victim\",\"data\":\n\ndata: evil}"},
		{"retry as text", `{"channel":"victim","retry":"1\nevent: evil","data":1}`},
		{"retry negative", `{"channel":"victim","retry":-1,"data":1}`},
		{"reserved type", `{"channel":"victim","type":"ssehub.reset","data":1}`},
		{"unknown field", `{"channel":"victim","event":"evil","data":1}`},
		{"second value", `{"channel":"victim","data":1} {"channel":"victim","data":2}`},
	}...)
	for _, c := range refused {
		resp, out := hubtest.Post(t, srv.URL+"/publish", nil, c.body)
		if resp.StatusCode != 400 || out["code"] == "" {
			t.Errorf("%s: status %d %v, want 400", c.name, resp.StatusCode, out)
		}
	}

	// Valid but tricky messages arrive as one event each, with their
	// fields intact.
	victim := hubtest.Open(t, http.DefaultClient, srv.URL+"/sse?channel=victim", nil)
	bystander := hubtest.Open(t, http.DefaultClient, srv.URL+"/sse?channel=victim&channel=other", nil)
	accepted := []struct {
		body, typ, id, data string
	}{
		{`{"channel":"victim","data":"a\n\nid: 666\nevent: evil\ndata: pwned"}`, "message", "", `"a\n\nid: 666\nevent: evil\ndata: pwned"`},
		{`{"channel":"victim","data":"\r\ndata: x\r\rretry: 1\u0000"}`, "message", "", `"\r\ndata: x\r\rretry: 1\u0000"`},
		{"{\"channel\":\"victim\",\n\"data\":\n{\"k\":\r\n[1,\n2]}\n}\n", "message", "", `{"k":[1,2]}`},
		{`{"channel":"victim","type":"a: b data: c","id":"id: 1 event: x","data":"\u2028\u2029\u0085"}`, "a: b data: c", "id: 1 event: x", `"\u2028\u2029\u0085"`},
		{"{\"channel\":\"victim\",\"data\":\"\u2028\u2029\u0085\"}", "message", "", "\"\u2028\u2029\u0085\""},
		{`{"channel":"victim","type":" spaced ","id":" 9 ","data":" 1 "}`, " spaced ", " 9 ", `" 1 "`},
		{`{"channel":"victim","data":":comment\n:"}`, "message", "", `":comment\n:"`},
	}
	for _, c := range accepted {
		resp, out := hubtest.Post(t, srv.URL+"/publish", nil, c.body)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: status %d %v", c.body, resp.StatusCode, out)
		}
		id := c.id
		if id == "" {
			id = out["id"]
		}
		for _, s := range []*hubtest.Stream{victim, bystander} {
			e := s.Next(t)
			if e.Type != c.typ || e.Data != c.data || e.LastEventID != id || !e.IDSet || e.Retry != 0 && e.Retry != 3000 {
				t.Fatalf("%s:\ngot  %+v\nwant type %q id %q data %s", c.body, e, c.typ, id, c.data)
			}
		}
	}
	// A last event on the other channel shows that nothing more came to the
	// victim's channel in between.
	resp, out := hubtest.Post(t, srv.URL+"/publish", nil, `{"channel":"other","data":"end"}`)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d %v", resp.StatusCode, out)
	}
	if e := bystander.Next(t); e.Data != `"end"` || strings.Contains(e.Data, "evil") {
		t.Fatalf("bystander got %+v after the tricky events", e)
	}
}
