package pseudonym

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/deident/deident/internal/secret"
)

func TestKeyRingRetiredEpoch(t *testing.T) {
	t1 := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	t2 := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	live1 := secret.NewKey(bytes.Repeat([]byte{1}, 32))
	live2 := secret.NewKey(bytes.Repeat([]byte{2}, 32))
	r, err := NewKeyRing([]Epoch{
		{From: t2, Key: live2},
		{Key: secret.Retired("kretired00000000")},
		{From: t1, Key: live1},
	})
	if err != nil {
		t.Fatal(err)
	}
	if r.Len() != 3 || r.ID(0) != "kretired00000000" || !r.Retired(0) || r.Retired(1) || r.ID(1) != live1.ID() {
		t.Fatalf("ring ids %s %s %s", r.ID(0), r.ID(1), r.ID(2))
	}
	if i, err := r.Epoch(t1.Add(-time.Hour)); i != 0 || !errors.Is(err, ErrEpochRetired) {
		t.Errorf("Epoch in the retired epoch = %d, %v", i, err)
	}
	if i, err := r.Epoch(t1.Add(time.Hour)); i != 1 || err != nil {
		t.Errorf("Epoch in a live epoch = %d, %v", i, err)
	}
	if r.NewHasher(1) == nil || r.CryptoPAn(2) == nil || r.CryptoPAn(0) != nil {
		t.Error("hashers and Crypto-PAn: live epochs have them, the retired one none")
	}

	_, err = NewKeyRing([]Epoch{{Key: live1}, {From: t1, Key: secret.Retired("knewest000000000")}})
	if err == nil || !strings.Contains(err.Error(), "newest key epoch is retired") {
		t.Errorf("newest retired: %v", err)
	}
}
