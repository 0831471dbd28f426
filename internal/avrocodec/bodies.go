package avrocodec

import (
	"errors"
	"fmt"
	"io"
)

// maxBody bounds one plain body: a body still cut short with this much
// buffered is refused rather than read on.
const maxBody = 64 << 20

// BodyReader reads plain Avro binary bodies written back to back with one
// schema (no container header, no Confluent header, no framing: each body
// ends where its record ends), as a dump of a topic whose records are
// plain bodies is. Not safe for concurrent use.
type BodyReader struct {
	r      io.Reader
	schema *Schema
	buf    []byte
	p      int   // start of the next body in buf
	off    int64 // input offset of buf[0]
	n      int64 // bodies read
	eof    bool
	err    error // sticky: without framing nothing after a bad body can be read
}

// NewBodyReader reads bodies written with s from r.
func NewBodyReader(r io.Reader, s *Schema) *BodyReader {
	return &BodyReader{r: r, schema: s, buf: make([]byte, 0, 64<<10)}
}

// Schema is the schema the bodies are read with.
func (r *BodyReader) Schema() *Schema { return r.schema }

// Next appends the next body as JSON to dst. It returns io.EOF after the
// last one. A body that does not decode (cut short at the end of the
// input, not matching the schema, no JSON form) is an error after which
// nothing more can be read: there is no framing to find the next body.
func (r *BodyReader) Next(dst []byte) ([]byte, error) {
	if r.err != nil {
		return dst, r.err
	}
	for {
		if r.p < len(r.buf) {
			d := binDecoder{b: r.buf[r.p:]}
			out, err := d.value(dst, r.schema.Root, 0)
			if err == nil {
				r.p += d.p
				r.n++
				return out, nil
			}
			if !errors.Is(err, ErrTruncated) || r.eof || len(r.buf)-r.p >= maxBody {
				// %v, not %w: a *PathError would tell callers the reader can go on.
				r.err = fmt.Errorf("avro body %d (at byte %d): %v; the bodies have no framing, so nothing after it can be read", r.n+1, r.off+int64(r.p), err)
				return dst, r.err
			}
		} else if r.eof {
			return dst, io.EOF
		}
		if err := r.fill(); err != nil {
			r.err = fmt.Errorf("reading avro bodies: %w", err)
			return dst, r.err
		}
	}
}

// fill moves the unread bytes to the front and reads more after them.
func (r *BodyReader) fill() error {
	if r.p > 0 {
		r.off += int64(r.p)
		r.buf = append(r.buf[:0], r.buf[r.p:]...)
		r.p = 0
	}
	if cap(r.buf)-len(r.buf) < 32<<10 {
		r.buf = append(r.buf, make([]byte, cap(r.buf))...)[:len(r.buf)]
	}
	n, err := r.r.Read(r.buf[len(r.buf):cap(r.buf)])
	r.buf = r.buf[:len(r.buf)+n]
	if err == io.EOF {
		r.eof = true
		return nil
	}
	return err
}
