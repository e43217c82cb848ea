package ssehub

import (
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"
)

// seqEvent is an event of channel ch whose Seq is seq, with n bytes of
// data.
func seqEvent(ch string, seq uint64, n int) *Event {
	data := make([]byte, n)
	for i := range data {
		data[i] = 'x'
	}
	return NewEvent(ch, fmt.Sprintf("%06d", seq), "", data, 0, seq, time.Time{})
}

// TestFeedReadersRaceWriter has readers follow a feed while one writer
// appends and the bounds evict, so that the slots are resized and reused
// under the readers: a reader gets consecutive events or learns that it
// fell behind, never a wrong event.
func TestFeedReadersRaceWriter(t *testing.T) {
	t.Parallel()
	const events = 5000
	var mu sync.Mutex // the owner's lock
	b := feedBudget{maxEvents: 64, maxFeedBytes: 1 << 30, maxBytes: 1 << 30}
	f := newFeed("c", 64)
	var wg sync.WaitGroup
	for r := range 4 {
		wg.Go(func() {
			var (
				pos    uint64
				buf    []*Event
				behind int
			)
			for pos < events {
				var fell bool
				buf, _, fell = f.read(buf[:0], pos, 1+r*7, 1<<20)
				if fell {
					behind++
					pos = f.head() // start again at the head, as resume does
					continue
				}
				if len(buf) == 0 {
					runtime.Gosched() // caught up: let the writer on
				}
				for _, e := range buf {
					if e.Seq != pos+1 {
						t.Errorf("reader %d at %d got the event of seq %d", r, pos, e.Seq)
						return
					}
					pos++
				}
			}
		})
	}
	for i := range uint64(events) {
		mu.Lock()
		b.push(f, seqEvent("c", i+1, 0))
		if i%1000 == 999 {
			// Shrink and grow again.
			for f.len() > 1 {
				b.pop(f)
			}
		}
		mu.Unlock()
	}
	wg.Wait()
}

// TestFeedBudget checks the bounds: events per feed, bytes per feed, bytes
// in all evicting the oldest event of any feed, and the event just
// appended staying whatever its size.
func TestFeedBudget(t *testing.T) {
	t.Parallel()
	size := seqEvent("a", 1, 1000).size()
	var emptied []string
	b := feedBudget{maxEvents: 3, maxFeedBytes: 2 * size, maxBytes: 5 * size, emptied: func(f *feed) { emptied = append(emptied, f.channel) }}
	feeds := map[string]*feed{}
	seq := uint64(0)
	push := func(ch string) {
		if feeds[ch] == nil {
			feeds[ch] = newFeed(ch, 3)
		}
		seq++
		b.push(feeds[ch], seqEvent(ch, seq, 1000))
	}
	held := func() string {
		s := ""
		for _, ch := range []string{"a", "b", "c", "d"} {
			f := feeds[ch]
			if f == nil {
				continue
			}
			s += ch + ":"
			for p := f.first.Load(); p < f.head(); p++ {
				s += fmt.Sprint(f.at(p).Seq, ",")
			}
			s += " "
		}
		return s
	}
	push("a")
	push("a")
	push("a") // over the per-feed bytes: the oldest of a goes
	if got, want := held(), "a:2,3, "; got != want {
		t.Fatalf("held %q, want %q", got, want)
	}
	push("b")
	push("b")
	push("c") // 5 events: at the total
	if got, want := held(), "a:2,3, b:4,5, c:6, "; got != want {
		t.Fatalf("held %q, want %q", got, want)
	}
	push("d") // over the total: the oldest event of all goes, a's 2
	push("d") // then a's 3, which empties a
	if got, want := held(), "a: b:4,5, c:6, d:7,8, "; got != want {
		t.Fatalf("held %q, want %q", got, want)
	}
	if fmt.Sprint(emptied) != "[a]" {
		t.Fatalf("emptied %v, want [a]", emptied)
	}
	if b.bytes != 5*size || len(b.heap) != 3 {
		t.Fatalf("budget holds %d bytes in %d feeds, want %d in 3", b.bytes, len(b.heap), 5*size)
	}

	// An event larger than every bound stays, alone, until the next.
	big := NewEvent("c", "big", "", make([]byte, 10*int(size)), 0, 100, time.Time{})
	b.push(feeds["c"], big)
	if got, want := held(), "a: b: c:100, d: "; got != want {
		t.Fatalf("held %q, want %q", got, want)
	}
	push("c")
	if got, want := held(), "a: b: c:9, d: "; got != want {
		t.Fatalf("held %q, want %q", got, want)
	}
	b.drop(feeds["c"])
	if feeds["c"].len() != 0 || feeds["c"].index != -1 || b.bytes != 0 || len(b.heap) != 0 {
		t.Fatalf("drop left %d events, %d bytes, %d feeds", feeds["c"].len(), b.bytes, len(b.heap))
	}

	// The count bound.
	b = feedBudget{maxEvents: 3, maxFeedBytes: 1 << 30, maxBytes: 1 << 30}
	f := newFeed("e", 3)
	for i := range uint64(10) {
		b.push(f, seqEvent("e", i+1, 10))
	}
	if f.len() != 3 || f.at(f.first.Load()).Seq != 8 {
		t.Fatalf("feed holds %d events from seq %d, want 3 from 8", f.len(), f.at(f.first.Load()).Seq)
	}
}

// TestWithID checks that a copy of an event for one subscriber carries its
// id in place of the event's own, whatever the shape of the frame: the
// encoder's, or a foreign library's with the id after the type and no
// space after the colon. A frame of the encoder's, id line first, is
// shared with the copy, not copied.
func TestWithID(t *testing.T) {
	own := NewEvent("c", "17", "cool", []byte(`{"a":1}`), 3000, 17, time.Now())
	legacy := &Event{Channel: "c", ID: "5", Seq: 9, frame: []byte("event:x\nid:5\nid\ndata:y\ndata:z\n\n")}
	none := NewEvent("c", "", "", []byte(`"n"`), 0, 0, time.Now())
	lines := NewEvent("c", "8", "", []byte("a\nb"), 0, 8, time.Now())
	for _, tt := range []struct {
		e      *Event
		want   string
		shared bool
	}{
		{own, "id: ~p\nevent: cool\nretry: 3000\ndata: {\"a\":1}\n\n", true},
		{legacy, "id: ~p\nevent:x\ndata:y\ndata:z\n\n", false},
		{none, "id: ~p\ndata: \"n\"\n\n", true},
		{lines, "id: ~p\ndata: a\ndata: b\n\n", true},
		{own.withID("~q"), "id: ~p\nevent: cool\nretry: 3000\ndata: {\"a\":1}\n\n", true},
		{positionEvent(Cursor{ID: "5", Seq: 5}), "id: ~p\n\n", true},
	} {
		c := tt.e.withID("~p")
		if string(c.Frame()) != tt.want || c.ID != "~p" || c.Seq != tt.e.Seq || c.frameLen() != len(tt.want) {
			t.Errorf("withID of %q = %q (id %q, length %d), want %q", tt.e.Frame(), c.Frame(), c.ID, c.frameLen(), tt.want)
		}
		if shared := &c.frame[len(c.frame)-1] == &tt.e.frame[len(tt.e.frame)-1]; shared != tt.shared {
			t.Errorf("withID of %q: frame shared %v, want %v", tt.e.Frame(), shared, tt.shared)
		}
	}
	if string(own.Frame()) != "id: 17\nevent: cool\nretry: 3000\ndata: {\"a\":1}\n\n" {
		t.Errorf("withID changed the shared event: %q", own.Frame())
	}
}
