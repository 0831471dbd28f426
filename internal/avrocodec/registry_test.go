package avrocodec_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deident/deident/configs"
	"github.com/deident/deident/internal/avrocodec"
	"github.com/deident/deident/internal/avrocodec/registrytest"
	"github.com/deident/deident/internal/gen"
)

func TestRegistryDecode(t *testing.T) {
	fake := registrytest.Open(t)
	id := fake.Add(configs.WorkflowSchema)
	reg, err := avrocodec.NewRegistry(fake.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := workflowSchema(t)
	rec := gen.New(gen.Options{Kind: gen.Workflow, Seed: 2}).AppendWorkflowAvroJSON(nil)
	enc := &avrocodec.Encoder{Schema: s, ID: uint32(id)}
	msg, err := enc.Append(nil, rec)
	if err != nil {
		t.Fatal(err)
	}
	if msg[0] != 0 || binary.BigEndian.Uint32(msg[1:5]) != id {
		t.Fatalf("header %x", msg[:5])
	}
	dec := &avrocodec.Decoder{Source: reg}
	ctx := context.Background()
	for range 3 {
		got, err := dec.AppendJSON(ctx, nil, msg)
		if err != nil {
			t.Fatal(err)
		}
		jsonEqual(t, "decoded", got, rec)
	}
	if n := fake.Gets.Load(); n != 1 {
		t.Fatalf("%d registry lookups for one id, want 1 (cached)", n)
	}
}

func TestRegistryRegister(t *testing.T) {
	fake := registrytest.Open(t)
	reg, _ := avrocodec.NewRegistry(fake.URL+"/", nil)
	s := workflowSchema(t)
	ctx := context.Background()
	subject := avrocodec.ValueSubject(registrytest.Name("vendor.flowai"))
	id, err := reg.Register(ctx, subject, s)
	if err != nil {
		t.Fatal(err)
	}
	again, err := reg.Register(ctx, subject, s)
	if err != nil || again != id {
		t.Fatalf("second registration: id %d, %v; want %d", again, err, id)
	}
	if got := fake.Subject(subject); len(got) != 1 || got[0] != int(id) {
		t.Fatalf("registry holds %v under the subject, want one version with id %d", got, id)
	}
	// The registered schema is known by id without a lookup.
	if _, err := reg.SchemaByID(ctx, id); err != nil || fake.Gets.Load() != 0 {
		t.Fatalf("lookup after registering: %v, %d GETs", err, fake.Gets.Load())
	}
	// A fresh client reads back what was registered.
	fresh, _ := avrocodec.NewRegistry(fake.URL, nil)
	got, err := fresh.SchemaByID(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if got.Root.Field("invoice") == nil || len(got.Root.Fields) != len(s.Root.Fields) {
		t.Fatalf("schema read back has %d fields, want %d", len(got.Root.Fields), len(s.Root.Fields))
	}
}

func TestWireErrors(t *testing.T) {
	fake := registrytest.Open(t)
	id := fake.Add(configs.WorkflowSchema)
	reg, _ := avrocodec.NewRegistry(fake.URL, nil)
	s := workflowSchema(t)
	rec := gen.New(gen.Options{Kind: gen.Workflow, Seed: 4}).AppendWorkflowAvroJSON(nil)
	good, _ := (&avrocodec.Encoder{Schema: s, ID: id}).Append(nil, rec)
	unknown, _ := (&avrocodec.Encoder{Schema: s, ID: registrytest.UnknownID}).Append(nil, rec)
	other := fake.Add(`{"type":"record","name":"Other","fields":[{"name":"n","type":"string"},{"name":"m","type":{"type":"enum","name":"M","symbols":["a"]}}]}`)
	mismatched := append(avrocodec.AppendWire(nil, other), good[avrocodec.HeaderSize:]...)
	dec := &avrocodec.Decoder{Source: reg}
	ctx := context.Background()

	cases := []struct {
		name string
		msg  []byte
		want error
		says string
	}{
		{"too short", []byte{0, 0, 0}, avrocodec.ErrNotWireFormat, "3 bytes"},
		{"magic byte", append([]byte{1}, good[1:]...), avrocodec.ErrNotWireFormat, "magic byte is 1"},
		{"unknown schema id", unknown, avrocodec.ErrUnknownSchema, fmt.Sprintf("schema id %d", registrytest.UnknownID)},
		{"truncated body", good[:len(good)-10], avrocodec.ErrTruncated, fmt.Sprintf("schema id %d", id)},
		{"body not matching its schema", mismatched, avrocodec.ErrSchemaMismatch, fmt.Sprintf("schema id %d", other)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := dec.AppendJSON(ctx, nil, c.msg)
			if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.says) {
				t.Fatalf("got %v; want %v saying %q", err, c.want, c.says)
			}
			if strings.Contains(err.Error(), "wf-") || strings.Contains(err.Error(), "corp.example") {
				t.Fatalf("error holds a value: %v", err)
			}
		})
	}

	t.Run("registry unreachable", func(t *testing.T) {
		// The fake answers 503; in front of a real registry the connection
		// is dropped without an answer.
		fake.Down.Store(true)
		defer fake.Down.Store(false)
		fresh, _ := avrocodec.NewRegistry(fake.URL, nil)
		_, err := (&avrocodec.Decoder{Source: fresh}).AppendJSON(ctx, nil, good)
		if !errors.Is(err, avrocodec.ErrRegistryUnavailable) || (!fake.IsReal() && !strings.Contains(err.Error(), "503")) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("registry down", func(t *testing.T) {
		fake.Close()
		fresh, _ := avrocodec.NewRegistry(strings.Replace(fake.URL, "http://", "http://user:hunter2@", 1), nil)
		_, err := (&avrocodec.Decoder{Source: fresh}).AppendJSON(ctx, nil, good)
		if !errors.Is(err, avrocodec.ErrRegistryUnavailable) {
			t.Fatalf("got %v", err)
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Fatalf("error holds the registry password: %v", err)
		}
		// A schema fetched before the outage is still served from the cache.
		if _, err := dec.AppendJSON(ctx, nil, good); err != nil {
			t.Fatalf("cached schema: %v", err)
		}
	})
}

func TestNewRegistryURL(t *testing.T) {
	for _, u := range []string{"", "localhost:8081", "ftp://x", "http://"} {
		if _, err := avrocodec.NewRegistry(u, nil); err == nil {
			t.Errorf("%q: accepted", u)
		}
	}
}

// Credentials set with SetBasicAuth go with every request, and never into
// an error.
func TestRegistryBasicAuth(t *testing.T) {
	fake := registrytest.New()
	defer fake.Close()
	fake.RequireAuth("svc", "hunter22")
	id := fake.Add(configs.WorkflowSchema)
	ctx := context.Background()

	anon, _ := avrocodec.NewRegistry(fake.URL, nil)
	if _, err := anon.SchemaByID(ctx, id); err == nil || strings.Contains(err.Error(), "hunter22") {
		t.Fatalf("without credentials: %v", err)
	}
	wrong, _ := avrocodec.NewRegistry(fake.URL, nil)
	wrong.SetBasicAuth("svc", "hunter23")
	if _, err := wrong.SchemaByID(ctx, id); err == nil || strings.Contains(err.Error(), "hunter23") || !strings.Contains(err.Error(), "401") {
		t.Fatalf("wrong credentials: %v", err)
	}
	reg, _ := avrocodec.NewRegistry(fake.URL, nil)
	reg.SetBasicAuth("svc", "hunter22")
	if _, err := reg.SchemaByID(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Register(ctx, "t-value", workflowSchema(t)); err != nil {
		t.Fatal(err)
	}
}

// Concurrent lookups of an id not yet cached (several partitions meeting a
// new writer schema at once) share one request.
func TestRegistryConcurrentMisses(t *testing.T) {
	fake := registrytest.New()
	defer fake.Close()
	id := fake.Add(configs.WorkflowSchema)
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(50 * time.Millisecond)
		fake.ServeHTTP(w, r)
	}))
	defer slow.Close()
	reg, _ := avrocodec.NewRegistry(slow.URL, nil)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			if _, err := reg.SchemaByID(context.Background(), id); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := fake.Gets.Load(); n != 1 {
		t.Fatalf("%d requests for one id looked up 8 times at once, want 1", n)
	}
}
