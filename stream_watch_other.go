//go:build !linux

package ssehub

// peerWatch does nothing here: heartbeats find clients that went away.
type peerWatch struct{}

func (w *peerWatch) watch(*detached)   {}
func (w *peerWatch) unwatch(*detached) {}
