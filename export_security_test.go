package ssehub

// OpenStreams returns how many streams hold a connection slot of h.
func OpenStreams(h *Hub) int { return h.web.conns.open() }
