// Package registrytest gives tests a schema registry: by default an
// in-process fake serving the two endpoints of the Confluent Schema
// Registry REST API that deident uses (GET /schemas/ids/{id}, POST
// /subjects/{subject}/versions) the way Confluent answers them, with
// switches for an outage and basic auth; or, when
// DEIDENT_SCHEMA_REGISTRY_URL is set (scripts/registry-local start prints
// one), a real Confluent-compatible registry behind a transparent
// loopback proxy that only counts lookups and can cut the connection.
package registrytest

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// EnvURL names the environment variable holding a real registry's base URL
// (e.g. http://127.0.0.1:19881/apis/ccompat/v7).
const EnvURL = "DEIDENT_SCHEMA_REGISTRY_URL"

// Real reports whether tests run against a real registry (EnvURL is set).
func Real() bool { return strings.TrimSpace(os.Getenv(EnvURL)) != "" }

// Registry is a schema registry for one test. Safe for concurrent use.
type Registry struct {
	// URL is the base URL the code under test is given.
	URL string
	srv *httptest.Server

	// real is the real registry's base URL, or nil for the fake.
	real *url.URL

	mu       sync.Mutex
	schemas  []string // fake: id = index + 1
	subjects map[string][]int
	user     string
	password string
	prefix   string // real: subject prefix unique to this Registry
	adds     int

	// Down makes the registry unreachable: the fake answers every request
	// with 503, as a registry that is down behind a load balancer does; in
	// front of a real registry the proxy drops the connection without an
	// answer, as a registry that has gone away does.
	Down atomic.Bool
	// Gets counts GET /schemas/ids lookups.
	Gets atomic.Int64
}

// New starts an in-process fake registry; Close stops it.
func New() *Registry {
	r := &Registry{subjects: map[string][]int{}}
	r.srv = httptest.NewServer(r)
	r.URL = r.srv.URL
	return r
}

// Open returns the registry a test uses: the real one named by EnvURL
// when it is set, else a fake (New). It is closed when the test ends.
func Open(t testing.TB) *Registry {
	t.Helper()
	raw := strings.TrimSpace(os.Getenv(EnvURL))
	if raw == "" {
		r := New()
		t.Cleanup(r.Close)
		return r
	}
	u, err := url.Parse(strings.TrimSuffix(raw, "/"))
	if err != nil || u.Host == "" {
		t.Fatalf("registrytest: %s=%q is not a URL", EnvURL, raw)
	}
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	r := &Registry{real: u, prefix: "deident-test-" + hex.EncodeToString(rnd[:])}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.Out.Host = u.Host
		},
	}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if r.Down.Load() {
			// No answer at all: the client sees the connection closed.
			if hj, ok := w.(http.Hijacker); ok {
				if c, _, err := hj.Hijack(); err == nil {
					c.Close()
					return
				}
			}
			panic(http.ErrAbortHandler)
		}
		if req.Method == http.MethodGet && strings.HasPrefix(req.URL.Path, "/schemas/ids/") {
			r.Gets.Add(1)
		}
		proxy.ServeHTTP(w, req)
	}))
	r.URL = r.srv.URL
	t.Cleanup(r.Close)
	return r
}

// IsReal reports whether r is a real registry behind the proxy.
func (r *Registry) IsReal() bool { return r.real != nil }

// Close stops the server (the fake, or the proxy in front of the real
// registry); requests then fail to connect. Safe to call twice.
func (r *Registry) Close() {
	r.srv.CloseClientConnections()
	r.srv.Close()
}

// RequireAuth makes every request to the fake need these basic-auth
// credentials (401 without them). A real registry started without
// authentication accepts any credentials, so it ignores this.
func (r *Registry) RequireAuth(user, password string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.user, r.password = user, password
}

// Add stores a schema and returns its id; the same text gets the same id.
// A real registry gets it under a subject of its own, so no compatibility
// rule relates it to other schemas.
func (r *Registry) Add(schema string) uint32 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.real == nil {
		return uint32(r.add(schema))
	}
	r.adds++
	subject := r.prefix + "-" + strconv.Itoa(r.adds) + "-value"
	body, _ := json.Marshal(map[string]string{"schema": schema})
	var resp struct {
		ID uint32 `json:"id"`
	}
	if err := r.call(http.MethodPost, "/subjects/"+url.PathEscape(subject)+"/versions", body, &resp); err != nil {
		panic(fmt.Sprintf("registrytest: registering a schema: %v", err))
	}
	return resp.ID
}

func (r *Registry) add(s string) int {
	for i, have := range r.schemas {
		if have == s {
			return i + 1
		}
	}
	r.schemas = append(r.schemas, s)
	return len(r.schemas)
}

// Subject returns the ids registered under subject, oldest first.
func (r *Registry) Subject(subject string) []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.real == nil {
		return append([]int(nil), r.subjects[subject]...)
	}
	var versions []int
	if err := r.call(http.MethodGet, "/subjects/"+url.PathEscape(subject)+"/versions", nil, &versions); err != nil {
		return nil // 404: no such subject
	}
	var ids []int
	for _, v := range versions {
		var resp struct {
			ID int `json:"id"`
		}
		if err := r.call(http.MethodGet, "/subjects/"+url.PathEscape(subject)+"/versions/"+strconv.Itoa(v), nil, &resp); err != nil {
			panic(fmt.Sprintf("registrytest: version %d of subject %s: %v", v, subject, err))
		}
		ids = append(ids, resp.ID)
	}
	return ids
}

// Schema returns the schema text of id, or "".
func (r *Registry) Schema(id int) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.real == nil {
		if id < 1 || id > len(r.schemas) {
			return ""
		}
		return r.schemas[id-1]
	}
	var resp struct {
		Schema string `json:"schema"`
	}
	if err := r.call(http.MethodGet, "/schemas/ids/"+strconv.Itoa(id), nil, &resp); err != nil {
		return ""
	}
	return resp.Schema
}

// call sends one request straight to the real registry.
func (r *Registry) call(method, path string, body []byte, out any) error {
	req, err := http.NewRequest(method, r.real.String()+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/vnd.schemaregistry.v1+json")
	if body != nil {
		req.Header.Set("Content-Type", "application/vnd.schemaregistry.v1+json")
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, data)
	}
	return json.Unmarshal(data, out)
}

func (r *Registry) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	w.Header().Set("Content-Type", "application/vnd.schemaregistry.v1+json")
	fail := func(status, code int, msg string) {
		w.WriteHeader(status)
		fmt.Fprintf(w, `{"error_code":%d,"message":%q}`, code, msg)
	}
	if r.Down.Load() {
		fail(http.StatusServiceUnavailable, 50301, "unavailable")
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.user != "" {
		if u, p, ok := req.BasicAuth(); !ok || u != r.user || p != r.password {
			fail(http.StatusUnauthorized, 40101, "Unauthorized")
			return
		}
	}
	switch {
	case req.Method == http.MethodGet && strings.HasPrefix(req.URL.Path, "/schemas/ids/"):
		r.Gets.Add(1)
		id, err := strconv.Atoi(strings.TrimPrefix(req.URL.Path, "/schemas/ids/"))
		if err != nil || id < 1 || id > len(r.schemas) {
			fail(http.StatusNotFound, 40403, "Schema not found")
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]string{"schema": r.schemas[id-1]})
	case req.Method == http.MethodPost && strings.HasPrefix(req.URL.Path, "/subjects/") && strings.HasSuffix(req.URL.Path, "/versions"):
		if req.Header.Get("Content-Type") != "application/vnd.schemaregistry.v1+json" {
			fail(http.StatusUnsupportedMediaType, 415, "Unsupported Media Type")
			return
		}
		subject := strings.TrimSuffix(strings.TrimPrefix(req.URL.Path, "/subjects/"), "/versions")
		var body struct {
			Schema string `json:"schema"`
		}
		if err := json.NewDecoder(req.Body).Decode(&body); err != nil || body.Schema == "" {
			fail(http.StatusUnprocessableEntity, 42201, "Invalid schema")
			return
		}
		id := r.add(body.Schema)
		if ids := r.subjects[subject]; len(ids) == 0 || ids[len(ids)-1] != id {
			r.subjects[subject] = append(ids, id)
		}
		_ = json.NewEncoder(w).Encode(map[string]int{"id": id})
	case req.Method == http.MethodGet && strings.HasPrefix(req.URL.Path, "/subjects/"):
		// GET /subjects/{subject}/versions[/{version}], as Confluent answers.
		subject, version, _ := strings.Cut(strings.TrimPrefix(req.URL.Path, "/subjects/"), "/versions")
		ids, ok := r.subjects[subject]
		if !ok {
			fail(http.StatusNotFound, 40401, "Subject not found")
			return
		}
		if version == "" {
			vs := make([]int, len(ids))
			for i := range ids {
				vs[i] = i + 1
			}
			_ = json.NewEncoder(w).Encode(vs)
			return
		}
		v, err := strconv.Atoi(strings.TrimPrefix(version, "/"))
		if err != nil || v < 1 || v > len(ids) {
			fail(http.StatusNotFound, 40402, "Version not found")
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"subject": subject, "version": v, "id": ids[v-1], "schema": r.schemas[ids[v-1]-1]})
	default:
		fail(http.StatusNotFound, 404, "HTTP 404 Not Found")
	}
}

// UnknownID is a schema id no registry in the tests holds (a real registry
// numbers its schemas from 1 and the tests register a few hundred).
const UnknownID uint32 = 1<<31 - 7

// Name returns prefix with a random suffix: a subject or topic name no
// other test run on a shared real registry uses.
func Name(prefix string) string {
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	return prefix + "-" + hex.EncodeToString(rnd[:])
}
