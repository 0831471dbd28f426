// Package registrytest is an in-process schema registry for tests: the two
// endpoints of the Confluent Schema Registry REST API that deident uses
// (GET /schemas/ids/{id}, POST /subjects/{subject}/versions), answered the
// way Confluent answers them, with switches for an outage and basic auth.
package registrytest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// Registry is a fake schema registry. Safe for concurrent use.
type Registry struct {
	// URL is the base URL of the server.
	URL string
	srv *httptest.Server

	mu       sync.Mutex
	schemas  []string // id = index + 1
	subjects map[string][]int
	user     string
	password string

	// Down makes every request fail with 503, as a registry that is down
	// behind a load balancer does.
	Down atomic.Bool
	// Gets counts GET /schemas/ids lookups.
	Gets atomic.Int64
}

// New starts a registry; Close stops it.
func New() *Registry {
	r := &Registry{subjects: map[string][]int{}}
	r.srv = httptest.NewServer(r)
	r.URL = r.srv.URL
	return r
}

// Close stops the server; requests then fail to connect.
func (r *Registry) Close() { r.srv.Close() }

// RequireAuth makes every request need these basic-auth credentials (401
// without them).
func (r *Registry) RequireAuth(user, password string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.user, r.password = user, password
}

// Add stores a schema (as the registry would under some subject) and
// returns its id; the same text gets the same id.
func (r *Registry) Add(schema string) uint32 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return uint32(r.add(schema))
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
	return append([]int(nil), r.subjects[subject]...)
}

// Schema returns the schema text of id, or "".
func (r *Registry) Schema(id int) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if id < 1 || id > len(r.schemas) {
		return ""
	}
	return r.schemas[id-1]
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
	default:
		fail(http.StatusNotFound, 404, "HTTP 404 Not Found")
	}
}
