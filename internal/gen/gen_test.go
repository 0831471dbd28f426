package gen

import (
	"bytes"
	"encoding/json"
	"testing"
)

func TestWriteIsValidJSONAndDeterministic(t *testing.T) {
	for _, kind := range []Kind{Threat, Workflow} {
		var a, b bytes.Buffer
		if err := Write(&a, Options{Kind: kind, Count: 500, Seed: 7}); err != nil {
			t.Fatal(err)
		}
		if err := Write(&b, Options{Kind: kind, Count: 500, Seed: 7}); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a.Bytes(), b.Bytes()) {
			t.Fatalf("%s: same seed gave different output", kind)
		}
		lines := bytes.Split(bytes.TrimSpace(a.Bytes()), []byte("\n"))
		if len(lines) != 500 {
			t.Fatalf("%s: %d lines, want 500", kind, len(lines))
		}
		users := map[string]int{}
		for i, l := range lines {
			var m map[string]any
			if err := json.Unmarshal(l, &m); err != nil {
				t.Fatalf("%s line %d: %v", kind, i+1, err)
			}
			if kind == Threat {
				users[m["actor"].(map[string]any)["user"].(map[string]any)["name"].(string)]++
			}
		}
		if kind == Threat {
			// Skewed: the most frequent user accounts for far more than 1/len(users).
			max := 0
			for _, n := range users {
				if n > max {
					max = n
				}
			}
			if max < 50 {
				t.Errorf("user distribution not skewed: top user has %d of 500 events", max)
			}
		}
	}
}
