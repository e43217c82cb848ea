package ring

import "testing"

// TestAgainstSlice drives a Ring and a plain slice with the same pushes and
// pops and checks they always hold the same elements.
func TestAgainstSlice(t *testing.T) {
	for _, size := range []int{1, 2, 3, 7} {
		r := New[int](size)
		var want []int
		for step := range 200 {
			if step%5 == 3 && r.Len() > 0 {
				if got := r.PopFront(); got != want[0] {
					t.Fatalf("size %d step %d: PopFront = %d, want %d", size, step, got, want[0])
				}
				want = want[1:]
				continue
			}
			dropped, ok := r.Push(step)
			want = append(want, step)
			if len(want) > size {
				if !ok || dropped != want[0] {
					t.Fatalf("size %d step %d: Push dropped (%d, %v), want (%d, true)", size, step, dropped, ok, want[0])
				}
				want = want[1:]
			} else if ok {
				t.Fatalf("size %d step %d: Push dropped %d from a ring that was not full", size, step, dropped)
			}
			if r.Len() != len(want) {
				t.Fatalf("size %d step %d: Len = %d, want %d", size, step, r.Len(), len(want))
			}
			for i, w := range want {
				if got := r.At(i); got != w {
					t.Fatalf("size %d step %d: At(%d) = %d, want %d", size, step, i, got, w)
				}
			}
		}
	}
}
