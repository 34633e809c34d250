package mutex

// SetMaxInFlight sets how many requests m has under way at once before
// its script calls collect in batches.
func SetMaxInFlight(m *Mutex, n int) {
	m.batch.mu.Lock()
	defer m.batch.mu.Unlock()
	m.batch.inFlightMax = n
}
