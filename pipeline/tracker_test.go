package pipeline

import (
	"errors"
	"math/rand/v2"
	"testing"
)

func TestPartitionTrackerTable(t *testing.T) {
	type op struct {
		add     bool
		off     int64
		outputs int   // for add
		done    bool  // for ack: expected done
		err     error // expected error
		commit  int64 // Committable after the op
		pending int
	}
	tests := []struct {
		name string
		ops  []op
	}{
		{"empty", nil},
		{"in order", []op{
			{add: true, off: 0, outputs: 1, commit: 0, pending: 1},
			{add: true, off: 1, outputs: 1, commit: 0, pending: 2},
			{off: 0, done: true, commit: 1, pending: 1},
			{off: 1, done: true, commit: 2, pending: 0},
		}},
		{"out of order ack holds commit at the oldest", []op{
			{add: true, off: 10, outputs: 1, commit: 10, pending: 1},
			{add: true, off: 11, outputs: 1, commit: 10, pending: 2},
			{add: true, off: 12, outputs: 1, commit: 10, pending: 3},
			{off: 12, done: true, commit: 10, pending: 2},
			{off: 11, done: true, commit: 10, pending: 1},
			{off: 10, done: true, commit: 13, pending: 0},
		}},
		{"fan-out needs every output", []op{
			{add: true, off: 5, outputs: 3, commit: 5, pending: 1},
			{off: 5, done: false, commit: 5, pending: 1},
			{off: 5, done: false, commit: 5, pending: 1},
			{off: 5, done: true, commit: 6, pending: 0},
			{off: 5, err: ErrUnknownOffset, commit: 6, pending: 0},
		}},
		{"records without outputs", []op{
			{add: true, off: 0, outputs: 0, commit: 1, pending: 0},
			{add: true, off: 1, outputs: 1, commit: 1, pending: 1},
			{add: true, off: 2, outputs: 0, commit: 1, pending: 1},
			{add: true, off: 3, outputs: 0, commit: 1, pending: 1},
			{off: 1, done: true, commit: 4, pending: 0},
		}},
		{"gaps in offsets (compaction, transaction markers)", []op{
			{add: true, off: 100, outputs: 1, commit: 100, pending: 1},
			{add: true, off: 250, outputs: 2, commit: 100, pending: 2},
			{off: 100, done: true, commit: 250, pending: 1},
			{off: 250, commit: 250, pending: 1},
			{off: 250, done: true, commit: 251, pending: 0},
		}},
		{"offsets must ascend", []op{
			{add: true, off: 3, outputs: 1, commit: 3, pending: 1},
			{add: true, off: 3, outputs: 1, err: ErrOffsetOrder, commit: 3, pending: 1},
			{add: true, off: 2, outputs: 1, err: ErrOffsetOrder, commit: 3, pending: 1},
		}},
		{"unknown offset", []op{
			{add: true, off: 3, outputs: 1, commit: 3, pending: 1},
			{off: 4, err: ErrUnknownOffset, commit: 3, pending: 1},
			{off: 2, err: ErrUnknownOffset, commit: 3, pending: 1},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := NewPartitionTracker()
			if got := tr.Committable(); got != -1 {
				t.Fatalf("fresh tracker: Committable = %d, want -1", got)
			}
			for i, o := range tt.ops {
				var err error
				var done bool
				if o.add {
					err = tr.Add(o.off, o.outputs)
				} else {
					done, err = tr.Ack(o.off)
				}
				if !errors.Is(err, o.err) || (err != nil) != (o.err != nil) {
					t.Fatalf("op %d: err %v, want %v", i, err, o.err)
				}
				if done != o.done {
					t.Errorf("op %d: done %v, want %v", i, done, o.done)
				}
				if got := tr.Committable(); got != o.commit {
					t.Errorf("op %d: Committable %d, want %d", i, got, o.commit)
				}
				if got := tr.Pending(); got != o.pending {
					t.Errorf("op %d: Pending %d, want %d", i, got, o.pending)
				}
			}
		})
	}
}

// trackerModel is the obvious, slow specification of PartitionTracker.
type trackerModel struct {
	outstanding map[int64]int
	last        int64
}

func (m *trackerModel) committable() int64 {
	min := int64(-1)
	for off, n := range m.outstanding {
		if n > 0 && (min < 0 || off < min) {
			min = off
		}
	}
	if min >= 0 {
		return min
	}
	if m.last < 0 {
		return -1
	}
	return m.last + 1
}

// runTrackerProperty drives a tracker and the model with the same random
// interleaving of adds (ascending offsets with gaps, 0..3 outputs) and acks
// in random order, checking after every step that Committable never
// passes an unacknowledged output, never goes backwards, and equals the
// model's answer.
func runTrackerProperty(t *testing.T, rng *rand.Rand, steps int) {
	t.Helper()
	tr := NewPartitionTracker()
	m := &trackerModel{outstanding: map[int64]int{}, last: -1}
	var owed []int64 // one entry per unacknowledged output
	next := int64(rng.IntN(5))
	prev := int64(-1)
	for step := 0; step < steps; step++ {
		if len(owed) == 0 || rng.IntN(3) == 0 {
			n := rng.IntN(4)
			if err := tr.Add(next, n); err != nil {
				t.Fatalf("step %d: Add(%d, %d): %v", step, next, n, err)
			}
			m.last = next
			if n > 0 {
				m.outstanding[next] = n
			}
			for range n {
				owed = append(owed, next)
			}
			next += 1 + int64(rng.IntN(3)) // gaps
		} else {
			i := rng.IntN(len(owed))
			off := owed[i]
			owed[i] = owed[len(owed)-1]
			owed = owed[:len(owed)-1]
			done, err := tr.Ack(off)
			if err != nil {
				t.Fatalf("step %d: Ack(%d): %v", step, off, err)
			}
			m.outstanding[off]--
			if want := m.outstanding[off] == 0; done != want {
				t.Fatalf("step %d: Ack(%d) done=%v, want %v", step, off, done, want)
			}
			if m.outstanding[off] == 0 {
				delete(m.outstanding, off)
			}
		}
		got := tr.Committable()
		if want := m.committable(); got != want {
			t.Fatalf("step %d: Committable %d, model says %d", step, got, want)
		}
		if got < prev {
			t.Fatalf("step %d: Committable went back from %d to %d", step, prev, got)
		}
		for _, off := range owed {
			if got > off {
				t.Fatalf("step %d: Committable %d passes unacknowledged offset %d", step, got, off)
			}
		}
		if tr.Pending() != len(m.outstanding) {
			t.Fatalf("step %d: Pending %d, model %d", step, tr.Pending(), len(m.outstanding))
		}
		prev = got
	}
}

func TestPartitionTrackerProperty(t *testing.T) {
	for seed := range uint64(300) {
		runTrackerProperty(t, rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), 2000)
	}
}

func FuzzPartitionTracker(f *testing.F) {
	f.Add(uint64(0), uint64(1))
	f.Add(uint64(42), uint64(7))
	f.Add(^uint64(0), uint64(0))
	f.Fuzz(func(t *testing.T, a, b uint64) {
		runTrackerProperty(t, rand.New(rand.NewPCG(a, b)), 500)
	})
}

func TestPartitionTrackerConcurrentAcks(t *testing.T) {
	tr := NewPartitionTracker()
	const n = 10000
	for off := range int64(n) {
		if err := tr.Add(off, 2); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan struct{})
	for w := range 4 {
		go func() {
			defer func() { done <- struct{}{} }()
			for off := int64(w); off < n; off += 4 {
				for range 2 {
					if _, err := tr.Ack(off); err != nil {
						t.Error(err)
					}
				}
			}
		}()
	}
	for range 4 {
		<-done
	}
	if got := tr.Committable(); got != n {
		t.Fatalf("Committable %d, want %d", got, n)
	}
	if tr.Pending() != 0 {
		t.Fatalf("Pending %d", tr.Pending())
	}
}
