package main

import (
	"os"
	"strings"
	"testing"

	"github.com/deident/deident/internal/config"
	"github.com/deident/deident/transforms/route"
)

// FuzzApplyImpliesDecode checks what run's Route.Decodes relies on: a
// record every route's Applier accepts is one decodeJSON accepts, so the
// runner may skip decodeJSON for records the first route applies.
func FuzzApplyImpliesDecode(f *testing.F) {
	for _, s := range []string{
		`{"time":"2026-11-01T00:00:00Z","actor":{"user":{"name":"ann"}}}`,
		`{"time":"2026-11-01T00:00:00Z","actor":{"user":`, `[1,2,3]`, `{}`, ` {} `, `{} {}`, `{}x`, `"x"`,
		`{"device":{"ip":"10.1.2.3"},"x":[{"y":1e400}]}`, "{\"a\":\"\xff\"}", `{"a":[[[[[[]]]]]]}`,
		`{"time":1767225600,"actor":{"user":{"name":null}}}`, `{"a":"\ud800"}`, `{"a":tru}`, `{"a":01}`,
	} {
		f.Add([]byte(s))
	}
	key, err := os.ReadFile("../../configs/demo-keys/flowai.key")
	if err != nil {
		f.Fatal(err)
	}
	f.Setenv("DEIDENT_KEY_FLOWAI", strings.TrimSpace(string(key)))
	cfg, err := config.Load("../../configs/deident.yaml")
	if err != nil {
		f.Fatal(err)
	}
	cfg.Limits.MaxRecordBytes = 256 // so that the fuzzer reaches the limit
	routes, err := route.CompileAll(cfg)
	if err != nil {
		f.Fatal(err)
	}
	var appliers []*route.Applier
	for _, name := range sortedNames(cfg.Vendors) {
		appliers = append(appliers, routes[name].NewApplier())
	}
	decode := decodeJSON(cfg.Limits.MaxRecordBytes)
	f.Fuzz(func(t *testing.T, in []byte) {
		derr := decode(in)
		for i, a := range appliers {
			if _, err := a.Apply(nil, in); err == nil && derr != nil {
				t.Fatalf("route %d applies %q, which decodeJSON rejects: %v", i, in, derr)
			}
		}
	})
}
