package redisbroker

// SetMaxHeldBytes sets the bound of the messages held back while a
// connection catches up, for a test that does not run in parallel, and
// returns what restores it.
func SetMaxHeldBytes(n int) (restore func()) {
	old := maxHeldBytes
	maxHeldBytes = n
	return func() { maxHeldBytes = old }
}
