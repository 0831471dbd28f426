package registrytest

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"github.com/deident/deident/internal/avrocodec"
)

const schema = `{"type":"record","name":"R","fields":[{"name":"a","type":"string"}]}`

// Open in front of a registry (here a fake standing in for a real one):
// schemas added are read back through the proxy, lookups are counted,
// subjects list their ids, and Down cuts the connection so the client sees
// the registry unavailable, then lets it through again.
func TestOpenProxy(t *testing.T) {
	backend := New()
	defer backend.Close()
	t.Setenv(EnvURL, backend.URL+"/")
	r := Open(t)
	if !r.IsReal() || r.URL == backend.URL {
		t.Fatalf("Open with %s set gave the fake (real %v, url %s)", EnvURL, r.IsReal(), r.URL)
	}
	id := r.Add(schema)
	if again := r.Add(schema); again != id {
		t.Fatalf("the same schema added twice: ids %d and %d", id, again)
	}
	if r.Schema(int(id)) != schema || r.Schema(int(UnknownID)) != "" {
		t.Fatalf("Schema(%d) = %q", id, r.Schema(int(id)))
	}
	ctx := context.Background()
	c, _ := avrocodec.NewRegistry(r.URL, nil)
	if _, err := c.SchemaByID(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SchemaByID(ctx, UnknownID); !errors.Is(err, avrocodec.ErrUnknownSchema) {
		t.Fatalf("unknown id: %v", err)
	}
	if n := r.Gets.Load(); n != 2 {
		t.Fatalf("%d lookups counted, want 2", n)
	}
	s, _ := avrocodec.ParseSchema(schema)
	out, err := c.Register(ctx, "out-value", s)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Subject("out-value"); len(got) != 1 || got[0] != int(out) {
		t.Fatalf("Subject = %v, want [%d]", got, out)
	}
	if got := r.Subject("none-value"); got != nil {
		t.Fatalf("Subject of an unknown subject = %v", got)
	}

	r.Down.Store(true)
	fresh, _ := avrocodec.NewRegistry(r.URL, nil)
	if _, err := fresh.SchemaByID(ctx, id); !errors.Is(err, avrocodec.ErrRegistryUnavailable) {
		t.Fatalf("while down: %v", err)
	}
	r.Down.Store(false)
	if _, err := fresh.SchemaByID(ctx, id); err != nil {
		t.Fatalf("back up: %v", err)
	}
}

// Without EnvURL, Open gives the fake.
func TestOpenFake(t *testing.T) {
	t.Setenv(EnvURL, "")
	r := Open(t)
	if r.IsReal() {
		t.Fatal("Open without the variable gave a real registry")
	}
	r.RequireAuth("u", "p")
	resp, err := http.Get(r.URL + "/schemas/ids/1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("without credentials: %d", resp.StatusCode)
	}
}
