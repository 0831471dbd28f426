package pipeline

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// The deident-src of an aggregate (and of a late count) names its window
// and the source records it decides, since it derives from many:
//
//	window=START/END;spans=TOPIC/PARTITION/FIRST-LAST:COUNT[,TOPIC/PARTITION/FIRST-LAST:COUNT...]
//
// START and END are RFC 3339 UTC timestamps (nanoseconds when not whole
// seconds), the window being [START, END). Each span is one source
// partition: COUNT records with offsets from FIRST to LAST inclusive (not
// every offset between: other records of the range went to other groups).
// A late count decides no records: "window=START/END" alone. A stage that
// has no windows writes "spans=..." alone. Kafka topic names never hold
// '=', ';' or ',', so the form cannot be mistaken for a record's
// "topic/partition/offset", which never starts with "window=" or "spans=".

// SrcSpan is a run of source records of one partition an aggregate decides.
type SrcSpan struct {
	Topic       string
	Partition   int
	First, Last int64
	Count       int
}

// AggregateSrc is a parsed aggregate provenance.
type AggregateSrc struct {
	// Start and End bound the window; both zero when the value has none.
	Start, End time.Time
	Spans      []SrcSpan
}

// ErrAggregateSrc is wrapped by ParseAggregateSrc's errors.
var ErrAggregateSrc = errors.New("malformed aggregate deident-src")

// IsAggregateSrc reports whether a deident-src value has the aggregate form.
func IsAggregateSrc(v string) bool {
	return strings.HasPrefix(v, "window=") || strings.HasPrefix(v, "spans=")
}

// AppendAggregateSrc appends the aggregate deident-src value: the window
// [start, end) unless start is zero, and the spans (omitted when none).
func AppendAggregateSrc(dst []byte, start, end time.Time, spans []SrcSpan) []byte {
	sep := false
	if !start.IsZero() {
		dst = append(dst, "window="...)
		dst = start.UTC().AppendFormat(dst, time.RFC3339Nano)
		dst = append(dst, '/')
		dst = end.UTC().AppendFormat(dst, time.RFC3339Nano)
		sep = true
	}
	if len(spans) == 0 {
		return dst
	}
	if sep {
		dst = append(dst, ';')
	}
	dst = append(dst, "spans="...)
	for i, sp := range spans {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, sp.Topic...)
		dst = append(dst, '/')
		dst = strconv.AppendInt(dst, int64(sp.Partition), 10)
		dst = append(dst, '/')
		dst = strconv.AppendInt(dst, sp.First, 10)
		dst = append(dst, '-')
		dst = strconv.AppendInt(dst, sp.Last, 10)
		dst = append(dst, ':')
		dst = strconv.AppendInt(dst, int64(sp.Count), 10)
	}
	return dst
}

// ParseAggregateSrc parses what AppendAggregateSrc writes. Errors quote
// no more than the field that failed (provenance holds no record values).
func ParseAggregateSrc(v string) (AggregateSrc, error) {
	var a AggregateSrc
	if !IsAggregateSrc(v) {
		return a, fmt.Errorf("%w: want window=START/END;spans=SPANS", ErrAggregateSrc)
	}
	seen := map[string]bool{}
	for _, field := range strings.Split(v, ";") {
		name, val, ok := strings.Cut(field, "=")
		if !ok || seen[name] {
			return a, fmt.Errorf("%w: field %q", ErrAggregateSrc, name)
		}
		seen[name] = true
		switch name {
		case "window":
			s, e, ok := strings.Cut(val, "/")
			start, err1 := time.Parse(time.RFC3339Nano, s)
			end, err2 := time.Parse(time.RFC3339Nano, e)
			if !ok || err1 != nil || err2 != nil || !start.Before(end) {
				return a, fmt.Errorf("%w: window: want START/END, RFC 3339, START before END", ErrAggregateSrc)
			}
			a.Start, a.End = start, end
		case "spans":
			for i, sv := range strings.Split(val, ",") {
				sp, err := parseSpan(sv)
				if err != nil {
					return a, fmt.Errorf("%w: span %d: %v", ErrAggregateSrc, i, err)
				}
				a.Spans = append(a.Spans, sp)
			}
		default:
			return a, fmt.Errorf("%w: unknown field %q", ErrAggregateSrc, name)
		}
	}
	return a, nil
}

func parseSpan(v string) (SrcSpan, error) {
	bad := errors.New("want TOPIC/PARTITION/FIRST-LAST:COUNT")
	i := strings.LastIndexByte(v, '/')
	if i < 0 {
		return SrcSpan{}, bad
	}
	j := strings.LastIndexByte(v[:i], '/')
	if j <= 0 {
		return SrcSpan{}, bad
	}
	rng, cnt, ok := strings.Cut(v[i+1:], ":")
	f, l, ok2 := strings.Cut(rng, "-")
	p, err1 := strconv.Atoi(v[j+1 : i])
	first, err2 := strconv.ParseInt(f, 10, 64)
	last, err3 := strconv.ParseInt(l, 10, 64)
	n, err4 := strconv.Atoi(cnt)
	if !ok || !ok2 || err1 != nil || err2 != nil || err3 != nil || err4 != nil ||
		p < 0 || first < 0 || last < first || n < 1 || int64(n) > last-first+1 {
		return SrcSpan{}, bad
	}
	return SrcSpan{Topic: v[:j], Partition: p, First: first, Last: last, Count: n}, nil
}
