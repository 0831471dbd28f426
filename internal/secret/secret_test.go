package secret

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestKeyNeverPrints(t *testing.T) {
	k := NewKey([]byte("0123456789abcdef0123456789abcdef-very-secret"))
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("loaded", "key", k)
	j, _ := json.Marshal(struct{ K Key }{k})
	outs := []string{
		fmt.Sprint(k), fmt.Sprintf("%v %+v %#v %s %q %x %X", k, k, k, k, k, k, k),
		fmt.Sprintf("%v", struct{ K Key }{k}), fmt.Sprintf("%+v", &struct{ K Key }{k}),
		logs.String(), string(j),
	}
	for _, o := range outs {
		if strings.Contains(o, "secret") || strings.Contains(o, "0123456789") || strings.Contains(o, "30313233") {
			t.Errorf("key material leaked: %s", o)
		}
		if !strings.Contains(o, Redacted) {
			t.Errorf("expected %s in %q", Redacted, o)
		}
	}
}

func TestKeyIDStableAndDistinct(t *testing.T) {
	a := NewKey(bytes.Repeat([]byte{1}, 32))
	b := NewKey(bytes.Repeat([]byte{2}, 32))
	if a.ID() != NewKey(bytes.Repeat([]byte{1}, 32)).ID() {
		t.Fatal("key id not stable")
	}
	if a.ID() == b.ID() {
		t.Fatal("different keys share an id")
	}
	if len(a.ID()) != 17 || a.ID()[0] != 'k' {
		t.Fatalf("unexpected id form %q", a.ID())
	}
	if bytes.Equal(a.Derive("x"), a.Derive("y")) {
		t.Fatal("derived subkeys for different labels are equal")
	}
}

func TestRetiredKeyKeepsItsIDAndCannotKey(t *testing.T) {
	k := Retired("k0123456789abcdef")
	if !k.IsRetired() || k.ID() != "k0123456789abcdef" || k.Len() != 0 || fmt.Sprint(k) != Redacted {
		t.Fatalf("retired key: retired %v id %s len %d", k.IsRetired(), k.ID(), k.Len())
	}
	if NewKey(make([]byte, 32)).IsRetired() || (Key{}).IsRetired() {
		t.Fatal("a live key reports retired")
	}
	defer func() {
		if recover() == nil {
			t.Fatal("Derive on a retired key did not panic")
		}
	}()
	k.Derive("pseudonym")
}
