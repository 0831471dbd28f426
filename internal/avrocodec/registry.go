package avrocodec

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Registry is a client of a Confluent-compatible schema registry (the REST
// API Confluent Schema Registry, Karapace and Redpanda serve). Schemas are
// cached by id for the life of the client (an id never changes its
// schema); registrations are cached by subject and schema text. Safe for
// concurrent use.
type Registry struct {
	base *url.URL
	http *http.Client
	// user and password, when user is set, go with every request (basic auth).
	user, password string

	mu       sync.Mutex
	byID     map[uint32]*Schema
	fetching map[uint32]*fetch // lookups in flight: concurrent misses share one request
	ids      map[string]uint32 // subject \x00 schema text -> id
}

// fetch is one lookup in flight; done is closed once s or err is set.
type fetch struct {
	done chan struct{}
	s    *Schema
	err  error
}

// NewRegistry returns a client for the registry at baseURL. A nil client
// uses one with a 10 s timeout.
func NewRegistry(baseURL string, client *http.Client) (*Registry, error) {
	u, err := url.Parse(strings.TrimSuffix(baseURL, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("schema registry url: want http(s)://host[:port], got %q", redact(baseURL))
	}
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	return &Registry{base: u, http: client, byID: map[uint32]*Schema{}, fetching: map[uint32]*fetch{}, ids: map[string]uint32{}}, nil
}

// SetBasicAuth makes every request carry these credentials (HTTP basic
// auth). Call it before the registry is used; errors never show them.
func (r *Registry) SetBasicAuth(user, password string) { r.user, r.password = user, password }

func redact(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		return u.Redacted()
	}
	return "(unparsable)"
}

// ValueSubject is the subject of a topic's value schema under the default
// TopicNameStrategy.
func ValueSubject(topic string) string { return topic + "-value" }

const contentType = "application/vnd.schemaregistry.v1+json"

// registryError is the body a registry sends with a failure.
type registryError struct {
	Code    int    `json:"error_code"`
	Message string `json:"message"`
}

// SchemaByID returns the schema registered under id (GET /schemas/ids/{id}).
// An id the registry does not know wraps ErrUnknownSchema; a registry that
// cannot be reached or fails wraps ErrRegistryUnavailable. Concurrent
// callers missing the cache for the same id share one request; failures
// are not cached.
func (r *Registry) SchemaByID(ctx context.Context, id uint32) (*Schema, error) {
	r.mu.Lock()
	if s, ok := r.byID[id]; ok {
		r.mu.Unlock()
		return s, nil
	}
	if f, ok := r.fetching[id]; ok {
		r.mu.Unlock()
		select {
		case <-f.done:
			return f.s, f.err
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: waiting for schema id %d: %v", ErrRegistryUnavailable, id, ctx.Err())
		}
	}
	f := &fetch{done: make(chan struct{})}
	r.fetching[id] = f
	r.mu.Unlock()
	f.s, f.err = r.schemaByID(ctx, id)
	r.mu.Lock()
	if f.err == nil {
		r.byID[id] = f.s
	}
	delete(r.fetching, id)
	r.mu.Unlock()
	close(f.done)
	return f.s, f.err
}

func (r *Registry) schemaByID(ctx context.Context, id uint32) (*Schema, error) {
	var resp struct {
		Schema     string `json:"schema"`
		SchemaType string `json:"schemaType"`
	}
	status, err := r.do(ctx, http.MethodGet, "/schemas/ids/"+strconv.FormatUint(uint64(id), 10), nil, &resp)
	if err != nil {
		if status == http.StatusNotFound {
			return nil, ErrUnknownSchema
		}
		return nil, err
	}
	if resp.SchemaType != "" && resp.SchemaType != "AVRO" {
		return nil, fmt.Errorf("schema is %s, not AVRO", resp.SchemaType)
	}
	s, err := ParseSchema(resp.Schema)
	if err != nil {
		return nil, fmt.Errorf("schema from the registry: %w", err)
	}
	return s, nil
}

// Register registers s under subject (POST /subjects/{subject}/versions)
// and returns its id; registering a schema already there returns its id.
func (r *Registry) Register(ctx context.Context, subject string, s *Schema) (uint32, error) {
	key := subject + "\x00" + s.Text
	r.mu.Lock()
	id, ok := r.ids[key]
	r.mu.Unlock()
	if ok {
		return id, nil
	}
	body, _ := json.Marshal(map[string]string{"schema": s.Text})
	var resp struct {
		ID uint32 `json:"id"`
	}
	if _, err := r.do(ctx, http.MethodPost, "/subjects/"+url.PathEscape(subject)+"/versions", body, &resp); err != nil {
		return 0, fmt.Errorf("registering the schema under subject %s: %w", subject, err)
	}
	r.mu.Lock()
	r.ids[key] = resp.ID
	r.byID[resp.ID] = s
	r.mu.Unlock()
	return resp.ID, nil
}

// do sends one request and decodes a 2xx JSON answer into out. It returns
// the status (0 when no answer came).
func (r *Registry) do(ctx context.Context, method, path string, body []byte, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, r.base.String()+path, rd)
	if err != nil {
		return 0, fmt.Errorf("schema registry request: %w", err)
	}
	req.Header.Set("Accept", contentType)
	if r.user != "" {
		req.SetBasicAuth(r.user, r.password)
	}
	if body != nil {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := r.http.Do(req)
	if err != nil {
		// The url.Error text holds the URL, which may hold credentials.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return 0, fmt.Errorf("%w: %s %s%s: %v", ErrRegistryUnavailable, method, r.base.Redacted(), path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return resp.StatusCode, fmt.Errorf("%w: reading the answer to %s %s: %v", ErrRegistryUnavailable, method, path, err)
	}
	if resp.StatusCode >= 500 {
		return resp.StatusCode, fmt.Errorf("%w: %s %s answered %d", ErrRegistryUnavailable, method, path, resp.StatusCode)
	}
	if resp.StatusCode/100 != 2 {
		var re registryError
		_ = json.Unmarshal(data, &re)
		return resp.StatusCode, fmt.Errorf("%s %s answered %d (error code %d)", method, path, resp.StatusCode, re.Code)
	}
	if err := json.Unmarshal(data, out); err != nil {
		return resp.StatusCode, fmt.Errorf("%s %s: answer is not the expected JSON", method, path)
	}
	return resp.StatusCode, nil
}
