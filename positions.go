package ssehub

import (
	"hash/fnv"
	"slices"
	"strconv"
	"strings"
)

// A ChannelOrderer is a Replayer whose Seq orders the events of each
// channel, but not the events of different channels: each channel is
// numbered on its own, as on Redis Cluster, where channels live on shards
// with clocks of their own. A position over several channels is then one
// Seq per channel, and a single number cannot stand for it.
//
// For a broker whose ChannelOrder reports true, the Hub
//   - compares each live event's Seq with the head of its own channel,
//     Cursor.Channels[e.Channel], to tell whether the replay covered it;
//   - gives the events of a stream over several channels the id
//     FormatPositions makes of the stream's position in each channel, so
//     that the Last-Event-ID of a reconnecting client holds them all. Replay
//     gets such ids back, and reads them with ParsePositions. A stream over
//     one channel keeps the events' own ids.
//
// Replay and Head then return a Cursor whose Channels holds the position of
// each channel, and whose ID is FormatPositions(Channels) for several
// channels, or the position of the one channel as an event id.
// A reset event it delivers live (ResetType, for a channel whose missed
// events are gone) has as Seq the position the channel resumes from, which
// may be before the events delivered so far when the channel's history
// went back.
type ChannelOrderer interface {
	Replayer
	// ChannelOrder reports whether Seq orders events per channel only.
	ChannelOrder() bool
}

// positionsPrefix starts every id FormatPositions makes.
const positionsPrefix = "~"

// FormatPositions returns the id that stands for a position in each of
// several channels: pos maps each channel to the Seq of the last event
// covered on it, 0 for none. The id lists the positions in the order of the
// channel names, and ends with a checksum of the names, so that
// ParsePositions can tell an id made for other channels.
func FormatPositions(pos map[string]uint64) string {
	names := make([]string, 0, len(pos))
	for name := range pos {
		names = append(names, name)
	}
	slices.Sort(names)
	seqs := make([]uint64, len(names))
	for i, name := range names {
		seqs[i] = pos[name]
	}
	return string(appendPositions(nil, seqs, channelsSum(names)))
}

// ParsePositions reads an id that FormatPositions made for exactly the
// channels given, in any order. It reports false for any other id.
func ParsePositions(id string, channels []string) (map[string]uint64, bool) {
	rest, ok := strings.CutPrefix(id, positionsPrefix)
	if !ok {
		return nil, false
	}
	names := slices.Clone(channels)
	slices.Sort(names)
	names = slices.Compact(names)
	fields := strings.Split(rest, ".")
	if len(fields) != len(names)+1 || fields[len(names)] != channelsSum(names) {
		return nil, false
	}
	pos := make(map[string]uint64, len(names))
	for i, name := range names {
		seq, err := strconv.ParseUint(fields[i], 36, 64)
		if err != nil {
			return nil, false
		}
		pos[name] = seq
	}
	return pos, true
}

// appendPositions appends to dst the id of seqs, one per channel in the
// order of their names, whose checksum is sum.
func appendPositions(dst []byte, seqs []uint64, sum string) []byte {
	dst = append(dst, positionsPrefix...)
	for _, seq := range seqs {
		dst = strconv.AppendUint(dst, seq, 36)
		dst = append(dst, '.')
	}
	return append(dst, sum...)
}

// channelsSum is a short checksum of sorted channel names.
func channelsSum(sorted []string) string {
	h := fnv.New32a()
	for _, name := range sorted {
		h.Write([]byte(name))
		h.Write([]byte{0})
	}
	return strconv.FormatUint(uint64(h.Sum32()), 36)
}

// positionState is what a stream whose events' ids are its positions
// keeps: the Seq of each channel's last event taken, or the replay's start
// or head.
type positionState struct {
	at     []uint64 // per cursor
	order  []int    // indices of the cursors, in the order of their channel names
	sum    string   // checksum of the channel names
	idBuf  []byte
	settle bool // once pending is sent, the positions move to the cursors' skip
}

// orderPositions makes s a stream whose events carry its position in each
// channel as their id.
func (s *Subscription) orderPositions() {
	p := &positionState{at: make([]uint64, len(s.cursors)), order: make([]int, len(s.cursors))}
	for i := range p.order {
		p.order[i] = i
	}
	slices.SortFunc(p.order, func(i, j int) int { return strings.Compare(s.cursors[i].c.name, s.cursors[j].c.name) })
	names := make([]string, len(p.order))
	for k, i := range p.order {
		names[k] = s.cursors[i].c.name
	}
	p.sum = channelsSum(names)
	s.positions = p
}

// setPositions sets the positions from pos, a broker's cursor.
func (s *Subscription) setPositions(pos map[string]uint64) {
	if s.positions == nil || pos == nil {
		return
	}
	for i := range s.cursors {
		s.positions.at[i] = pos[s.cursors[i].c.name]
	}
}

// stamp returns e with the stream's positions as its id, once e is taken:
// cur is the cursor e was found after, or nil when e comes from a replay.
func (s *Subscription) stamp(e *Event, cur *cursor) *Event {
	p := s.positions
	if e.Seq != 0 {
		for i := range s.cursors {
			if c := &s.cursors[i]; c == cur || cur == nil && c.c.name == e.Channel {
				p.at[i] = e.Seq
				break
			}
		}
	}
	b := append(p.idBuf[:0], positionsPrefix...)
	for _, i := range p.order {
		b = strconv.AppendUint(b, p.at[i], 36)
		b = append(b, '.')
	}
	p.idBuf = append(b, p.sum...)
	return e.withID(string(p.idBuf))
}
