package avrocodec

import (
	"bufio"
	"bytes"
	"compress/flate"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/linkedin/goavro/v2"
)

// OCFMagic starts every Avro object container file.
var OCFMagic = []byte("Obj\x01")

// IsOCF reports whether head starts like an Avro object container file.
func IsOCF(head []byte) bool { return bytes.HasPrefix(head, OCFMagic) }

// OCFReader reads an Avro object container file record by record as JSON.
// Not safe for concurrent use.
type OCFReader struct {
	r      *goavro.OCFReader
	schema *Schema
	n      int64
}

// NewOCFReader reads the container header from r and parses its schema.
func NewOCFReader(r io.Reader) (*OCFReader, error) {
	or, err := goavro.NewOCFReader(r)
	if err != nil {
		return nil, fmt.Errorf("reading avro container header: %w", err)
	}
	s, err := ParseSchema(or.Codec().Schema())
	if err != nil {
		return nil, fmt.Errorf("avro container schema: %w", err)
	}
	return &OCFReader{r: or, schema: s}, nil
}

// Schema is the writer schema in the file's header.
func (r *OCFReader) Schema() *Schema { return r.schema }

// Next appends the next record as JSON to dst. It returns io.EOF after the
// last record. A record that decodes but has no JSON form (NaN, invalid
// UTF-8) returns a *PathError and the reader goes on; a corrupt block
// returns another error, after which the file cannot be read further.
func (r *OCFReader) Next(dst []byte) ([]byte, error) {
	if !r.r.Scan() {
		if err := r.r.Err(); err != nil {
			return dst, fmt.Errorf("reading avro container after record %d: %w", r.n, sanitize(err))
		}
		return dst, io.EOF
	}
	native, err := r.r.Read()
	if err != nil {
		return dst, fmt.Errorf("reading avro container record %d: %w", r.n+1, sanitize(err))
	}
	r.n++
	return AppendJSON(dst, r.schema.Root, native)
}

// sanitize keeps goavro's container errors (block counts, sync markers)
// but maps record decoding errors to a path and kind, never bytes.
func sanitize(err error) error {
	if bytes.Contains([]byte(err.Error()), []byte("cannot decode")) {
		return decodeError(err)
	}
	return err
}

// OCFWriter writes JSON records to an Avro object container file under one
// schema, in blocks of BlockSize records. It writes the container itself
// (not through goavro) so that the same records give the same bytes.
// Not safe for concurrent use.
type OCFWriter struct {
	w      *bufio.Writer
	schema *Schema
	sync   [16]byte
	codec  string
	block  []byte
	n      int
	zbuf   bytes.Buffer
	zw     *flate.Writer
	// BlockSize is the number of records per container block.
	BlockSize int
}

// NewOCFWriter writes the container header to w. sync is the file's sync
// marker: pass one derived from the content (e.g. the policy version) so
// that the same input gives the same bytes. compression is "null" or
// "deflate" ("" means null).
func NewOCFWriter(w io.Writer, s *Schema, sync [16]byte, compression string) (*OCFWriter, error) {
	if compression == "" {
		compression = "null"
	}
	o := &OCFWriter{w: bufio.NewWriterSize(w, 1<<16), schema: s, sync: sync, codec: compression, BlockSize: 1000}
	switch compression {
	case "null":
	case "deflate":
		o.zw, _ = flate.NewWriter(&o.zbuf, flate.DefaultCompression)
	default:
		return nil, fmt.Errorf("avro container compression %q: want null or deflate", compression)
	}
	h := append([]byte{}, OCFMagic...)
	h = appendLong(h, 2) // metadata: a map of bytes, keys sorted
	h = appendString(h, "avro.codec")
	h = appendString(h, compression)
	h = appendString(h, "avro.schema")
	h = appendString(h, s.Text)
	h = append(h, 0)
	h = append(h, sync[:]...)
	if _, err := o.w.Write(h); err != nil {
		return nil, fmt.Errorf("writing avro container header: %w", err)
	}
	return o, nil
}

// Write encodes the JSON object rec under the writer's schema and queues
// it. A record that does not fit the schema returns a *PathError and is
// not written; the writer stays usable.
func (w *OCFWriter) Write(rec []byte) error {
	out, err := w.schema.AppendBinary(w.block, rec)
	if err != nil {
		return err
	}
	w.block = out
	w.n++
	if w.n >= w.BlockSize {
		return w.flushBlock()
	}
	return nil
}

func (w *OCFWriter) flushBlock() error {
	if w.n == 0 {
		return nil
	}
	data := w.block
	if w.zw != nil {
		w.zbuf.Reset()
		w.zw.Reset(&w.zbuf)
		_, _ = w.zw.Write(data)
		if err := w.zw.Close(); err != nil {
			return fmt.Errorf("compressing avro container block: %w", err)
		}
		data = w.zbuf.Bytes()
	}
	var head [2 * binary.MaxVarintLen64]byte
	h := appendLong(appendLong(head[:0], int64(w.n)), int64(len(data)))
	for _, p := range [][]byte{h, data, w.sync[:]} {
		if _, err := w.w.Write(p); err != nil {
			return fmt.Errorf("writing avro container block: %w", err)
		}
	}
	w.block, w.n = w.block[:0], 0
	return nil
}

// Flush writes queued records as a block and flushes the underlying writer.
func (w *OCFWriter) Flush() error {
	if err := w.flushBlock(); err != nil {
		return err
	}
	return w.w.Flush()
}
