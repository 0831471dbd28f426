// Command floor is the lower bound for the "bench" route's throughput: it does
// the least work any implementation of the route must do — split the input
// into lines and compute the four HMAC-SHA256 pseudonyms (hex, first 128 bits)
// — and nothing else: no JSON parsing, no output document, no IP
// generalisation. It writes only a running checksum of the pseudonyms to
// stdout and records/s to stderr.
//
//	floor -in /tmp/bench.jsonl -key $DEIDENT_BENCH_KEY
//
// The values are found by searching for fixed byte patterns, which works only
// for internal/gen's threat records (compact JSON, fixed key order, no escapes
// in the four values); a record whose value contains a backslash is an error
// rather than a silently wrong hash.
package main

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"flag"
	"fmt"
	"hash"
	"io"
	"os"
	"time"
)

// The four pseudonymised fields, in the order they are reported with -print.
// The first `"name":"` of a record is metadata.product.name, so the user's
// name is anchored on its parent object.
var anchors = [4][]byte{
	[]byte(`"user":{"name":"`), // actor.user.name
	[]byte(`"email_addr":"`),   // actor.user.email_addr
	[]byte(`"uid":"`),          // actor.user.uid (class_uid etc. are numbers: `"class_uid":1`)
	[]byte(`"hostname":"`),     // device.hostname
}

func main() {
	in := flag.String("in", "", "input file, JSON lines (internal/gen threat records)")
	keyHex := flag.String("key", "", "HMAC key, hex (32 bytes = 64 hex chars)")
	printN := flag.Int("print", 0, "also print the pseudonyms of the first N records, tab-separated (name, email_addr, uid, hostname), for checking against other implementations")
	flag.Parse()
	if *in == "" || *keyHex == "" {
		fmt.Fprintln(os.Stderr, "usage: floor -in FILE -key HEX [-print N]")
		os.Exit(2)
	}
	key, err := hex.DecodeString(*keyHex)
	if err != nil {
		fmt.Fprintln(os.Stderr, "floor: -key:", err)
		os.Exit(2)
	}
	f, err := os.Open(*in)
	if err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
	defer f.Close()

	out := bufio.NewWriter(os.Stdout)
	start := time.Now()
	n, sum, err := run(f, hmac.New(sha256.New, key), *printN, out)
	elapsed := time.Since(start)
	if err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
	fmt.Fprintf(out, "checksum %016x\n", sum)
	if err := out.Flush(); err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "floor: %d records in %.3fs = %.0f records/s\n",
		n, elapsed.Seconds(), float64(n)/elapsed.Seconds())
}

// run pseudonymises every line of r with mac and returns the number of
// records and a checksum over all pseudonyms. The first printN records'
// pseudonyms are written to w.
func run(r io.Reader, mac hash.Hash, printN int, w io.Writer) (n int, sum uint64, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	var (
		digest [sha256.Size]byte
		hexbuf [32]byte // 128 bits as hex
	)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 {
			continue
		}
		n++
		for i, a := range anchors {
			v, ok := value(line, a)
			if !ok {
				return n, sum, fmt.Errorf("record %d: no %s string value", n, a)
			}
			if bytes.IndexByte(v, '\\') >= 0 {
				return n, sum, fmt.Errorf("record %d: escaped %s value: the floor does not unescape", n, a)
			}
			mac.Reset()
			mac.Write(v)
			d := mac.Sum(digest[:0])
			hex.Encode(hexbuf[:], d[:16])
			// Running checksum: every hex byte of every pseudonym counts.
			for j := 0; j < len(hexbuf); j += 8 {
				sum = (sum<<7 | sum>>57) ^ binary.LittleEndian.Uint64(hexbuf[j:])
			}
			if n <= printN {
				sep := byte('\t')
				if i == len(anchors)-1 {
					sep = '\n'
				}
				if _, err := w.Write(append(hexbuf[:], sep)); err != nil {
					return n, sum, err
				}
			}
		}
	}
	return n, sum, sc.Err()
}

// value returns the JSON string value that follows anchor in line (anchor
// ends with the value's opening quote).
func value(line, anchor []byte) ([]byte, bool) {
	i := bytes.Index(line, anchor)
	if i < 0 {
		return nil, false
	}
	v := line[i+len(anchor):]
	j := bytes.IndexByte(v, '"')
	if j < 0 {
		return nil, false
	}
	return v[:j], true
}
