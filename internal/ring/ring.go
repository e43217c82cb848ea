// Package ring provides a bounded FIFO buffer that drops its oldest element
// when full.
package ring

// Ring holds at most a fixed number of elements, oldest first. Its storage
// grows on demand up to that bound. The zero value is unusable; call New.
type Ring[T any] struct {
	buf  []T
	size int
	head int // index of the oldest element
	n    int
}

// New returns a Ring that holds at most size elements; size must be positive.
func New[T any](size int) *Ring[T] {
	if size <= 0 {
		panic("ring: size must be positive")
	}
	return &Ring[T]{size: size}
}

// Len returns the number of elements held.
func (r *Ring[T]) Len() int { return r.n }

// At returns the i-th element, 0 being the oldest.
func (r *Ring[T]) At(i int) T { return r.buf[(r.head+i)%len(r.buf)] }

// Push appends v. When the ring is full it drops the oldest element and
// returns it with true.
func (r *Ring[T]) Push(v T) (dropped T, ok bool) {
	switch {
	case len(r.buf) < r.size && r.head+r.n == len(r.buf):
		// Growing: the elements fill buf from head to its end.
		r.buf = append(r.buf, v)
		r.n++
	case r.n < len(r.buf):
		r.buf[(r.head+r.n)%len(r.buf)] = v
		r.n++
	default:
		dropped, ok = r.buf[r.head], true
		r.buf[r.head] = v
		r.head = (r.head + 1) % len(r.buf)
	}
	return dropped, ok
}

// PopFront removes and returns the oldest element; the ring must not be empty.
func (r *Ring[T]) PopFront() T {
	var zero T
	v := r.buf[r.head]
	r.buf[r.head] = zero
	r.head = (r.head + 1) % len(r.buf)
	r.n--
	return v
}
