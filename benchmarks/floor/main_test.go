package main

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/deident/deident/internal/gen"
)

var testKey = bytes.Repeat([]byte{0x42}, 32)

func pseudonym(key []byte, v string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(v))
	return hex.EncodeToString(m.Sum(nil))[:32]
}

// The byte-pattern search must find the same four values a JSON parser does.
func TestFloorMatchesJSON(t *testing.T) {
	const count = 2000
	var in bytes.Buffer
	if err := gen.Write(&in, gen.Options{Kind: gen.Threat, Count: count, Seed: 7}); err != nil {
		t.Fatal(err)
	}
	records := strings.Split(strings.TrimSpace(in.String()), "\n")

	var out bytes.Buffer
	n, _, err := run(bytes.NewReader(in.Bytes()), hmac.New(sha256.New, testKey), count, &out)
	if err != nil {
		t.Fatal(err)
	}
	if n != count {
		t.Fatalf("records: got %d, want %d", n, count)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != count {
		t.Fatalf("printed %d lines, want %d", len(lines), count)
	}
	for i, rec := range records {
		var r struct {
			Device struct{ Hostname string }
			Actor  struct {
				User struct {
					Name      string `json:"name"`
					EmailAddr string `json:"email_addr"`
					UID       string `json:"uid"`
				}
			}
		}
		if err := json.Unmarshal([]byte(rec), &r); err != nil {
			t.Fatal(err)
		}
		want := strings.Join([]string{
			pseudonym(testKey, r.Actor.User.Name),
			pseudonym(testKey, r.Actor.User.EmailAddr),
			pseudonym(testKey, r.Actor.User.UID),
			pseudonym(testKey, r.Device.Hostname),
		}, "\t")
		if lines[i] != want {
			t.Fatalf("record %d: got %q, want %q\n%s", i+1, lines[i], want, rec)
		}
	}
}

// The checksum depends on the key and the data only.
func TestChecksumStable(t *testing.T) {
	var in bytes.Buffer
	if err := gen.Write(&in, gen.Options{Kind: gen.Threat, Count: 100, Seed: 1}); err != nil {
		t.Fatal(err)
	}
	_, a, err := run(bytes.NewReader(in.Bytes()), hmac.New(sha256.New, testKey), 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, b, _ := run(bytes.NewReader(in.Bytes()), hmac.New(sha256.New, testKey), 0, nil)
	_, c, _ := run(bytes.NewReader(in.Bytes()), hmac.New(sha256.New, []byte("other")), 0, nil)
	if a != b || a == c {
		t.Fatalf("checksums: %x %x %x", a, b, c)
	}
}

// TestWriteBenchInput writes the benchmark's input file; it runs only when
// asked to, until `deident gen` exists:
//
//	DEIDENT_BENCH_GEN_OUT=/tmp/bench.jsonl go test ./benchmarks/floor -run TestWriteBenchInput
//
// DEIDENT_BENCH_GEN_COUNT (default 1000000) and DEIDENT_BENCH_GEN_SEED
// (default 1) choose the records.
func TestWriteBenchInput(t *testing.T) {
	path := os.Getenv("DEIDENT_BENCH_GEN_OUT")
	if path == "" {
		t.Skip("set DEIDENT_BENCH_GEN_OUT to write the benchmark input")
	}
	count, seed := 1000000, uint64(1)
	if s := os.Getenv("DEIDENT_BENCH_GEN_COUNT"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil {
			t.Fatal(err)
		}
		count = v
	}
	if s := os.Getenv("DEIDENT_BENCH_GEN_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		seed = v
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriter(f)
	if err := gen.Write(w, gen.Options{Kind: gen.Threat, Count: count, Seed: seed}); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %d records to %s", count, path)
}
