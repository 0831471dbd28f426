package avrocodec_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/deident/deident/configs"
	"github.com/deident/deident/internal/avrocodec"
	"github.com/deident/deident/internal/avrocodec/registrytest"
	"github.com/deident/deident/internal/gen"
)

// fakeRegistry serves the two endpoints deident uses, the way Confluent
// Schema Registry answers them.
type fakeRegistry struct {
	mu       sync.Mutex
	schemas  []string // id = index + 1
	subjects map[string][]int
	gets     atomic.Int64
	down     atomic.Bool // answer 503
}

func (f *fakeRegistry) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/vnd.schemaregistry.v1+json")
	if f.down.Load() {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprint(w, `{"error_code":50301,"message":"unavailable"}`)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/schemas/ids/"):
		f.gets.Add(1)
		id, err := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/schemas/ids/"))
		if err != nil || id < 1 || id > len(f.schemas) {
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"error_code":40403,"message":"Schema not found"}`)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]string{"schema": f.schemas[id-1]})
	case r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, "/subjects/") && strings.HasSuffix(r.URL.Path, "/versions"):
		if r.Header.Get("Content-Type") != "application/vnd.schemaregistry.v1+json" {
			w.WriteHeader(http.StatusUnsupportedMediaType)
			return
		}
		subject := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/subjects/"), "/versions")
		var req struct {
			Schema string `json:"schema"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			w.WriteHeader(http.StatusUnprocessableEntity)
			fmt.Fprint(w, `{"error_code":42201,"message":"Invalid schema"}`)
			return
		}
		id := f.add(req.Schema)
		if f.subjects == nil {
			f.subjects = map[string][]int{}
		}
		f.subjects[subject] = append(f.subjects[subject], id)
		_ = json.NewEncoder(w).Encode(map[string]int{"id": id})
	default:
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprint(w, `{"error_code":404,"message":"HTTP 404 Not Found"}`)
	}
}

// add stores a schema (the caller holds mu or is the test) and returns its id.
func (f *fakeRegistry) add(s string) int {
	for i, have := range f.schemas {
		if have == s {
			return i + 1
		}
	}
	f.schemas = append(f.schemas, s)
	return len(f.schemas)
}

func TestRegistryDecode(t *testing.T) {
	fake := &fakeRegistry{}
	id := fake.add(configs.WorkflowSchema)
	srv := httptest.NewServer(fake)
	defer srv.Close()
	reg, err := avrocodec.NewRegistry(srv.URL, nil)
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
	if msg[0] != 0 || msg[4] != byte(id) {
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
	if n := fake.gets.Load(); n != 1 {
		t.Fatalf("%d registry lookups for one id, want 1 (cached)", n)
	}
}

func TestRegistryRegister(t *testing.T) {
	fake := &fakeRegistry{}
	srv := httptest.NewServer(fake)
	defer srv.Close()
	reg, _ := avrocodec.NewRegistry(srv.URL+"/", nil)
	s := workflowSchema(t)
	ctx := context.Background()
	subject := avrocodec.ValueSubject("vendor.flowai")
	id, err := reg.Register(ctx, subject, s)
	if err != nil {
		t.Fatal(err)
	}
	again, err := reg.Register(ctx, subject, s)
	if err != nil || again != id {
		t.Fatalf("second registration: id %d, %v; want %d", again, err, id)
	}
	if got := fake.subjects["vendor.flowai-value"]; len(got) != 1 || got[0] != int(id) {
		t.Fatalf("registry holds %v under the subject, want one version with id %d", fake.subjects, id)
	}
	// The registered schema is known by id without a lookup.
	if _, err := reg.SchemaByID(ctx, id); err != nil || fake.gets.Load() != 0 {
		t.Fatalf("lookup after registering: %v, %d GETs", err, fake.gets.Load())
	}
}

func TestWireErrors(t *testing.T) {
	fake := &fakeRegistry{}
	id := uint32(fake.add(configs.WorkflowSchema))
	srv := httptest.NewServer(fake)
	reg, _ := avrocodec.NewRegistry(srv.URL, nil)
	s := workflowSchema(t)
	rec := gen.New(gen.Options{Kind: gen.Workflow, Seed: 4}).AppendWorkflowAvroJSON(nil)
	good, _ := (&avrocodec.Encoder{Schema: s, ID: id}).Append(nil, rec)
	unknown, _ := (&avrocodec.Encoder{Schema: s, ID: 99}).Append(nil, rec)
	other := uint32(fake.add(`{"type":"record","name":"Other","fields":[{"name":"n","type":"string"},{"name":"m","type":{"type":"enum","name":"M","symbols":["a"]}}]}`))
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
		{"unknown schema id", unknown, avrocodec.ErrUnknownSchema, "schema id 99"},
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

	t.Run("registry answers 503", func(t *testing.T) {
		fake.down.Store(true)
		defer fake.down.Store(false)
		fresh, _ := avrocodec.NewRegistry(srv.URL, nil)
		_, err := (&avrocodec.Decoder{Source: fresh}).AppendJSON(ctx, nil, good)
		if !errors.Is(err, avrocodec.ErrRegistryUnavailable) || !strings.Contains(err.Error(), "503") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("registry down", func(t *testing.T) {
		srv.Close()
		fresh, _ := avrocodec.NewRegistry(strings.Replace(srv.URL, "http://", "http://user:hunter2@", 1), nil)
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
