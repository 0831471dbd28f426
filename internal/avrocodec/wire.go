package avrocodec

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// More sentinels for the wire format and the registry.
var (
	// ErrNotWireFormat: a message is too short for the Confluent header or
	// its magic byte is not 0.
	ErrNotWireFormat = errors.New("not the confluent wire format")
	// ErrUnknownSchema: the registry does not know the schema id.
	ErrUnknownSchema = errors.New("schema id unknown to the registry")
	// ErrRegistryUnavailable: the registry could not be reached or failed
	// (a network error or a 5xx); retrying later may succeed.
	ErrRegistryUnavailable = errors.New("schema registry unavailable")
)

// HeaderSize is the Confluent wire-format header: magic byte 0 and a
// 4-byte big-endian schema id.
const HeaderSize = 5

// AppendWire appends the Confluent header for schema id to dst.
func AppendWire(dst []byte, id uint32) []byte {
	dst = append(dst, 0)
	return binary.BigEndian.AppendUint32(dst, id)
}

// ParseWire splits a Confluent wire-format message into its schema id and
// binary body.
func ParseWire(msg []byte) (id uint32, body []byte, err error) {
	if len(msg) < HeaderSize {
		return 0, nil, fmt.Errorf("%w: message is %d bytes, the header alone is %d", ErrNotWireFormat, len(msg), HeaderSize)
	}
	if msg[0] != 0 {
		return 0, nil, fmt.Errorf("%w: magic byte is %d, want 0", ErrNotWireFormat, msg[0])
	}
	return binary.BigEndian.Uint32(msg[1:5]), msg[HeaderSize:], nil
}

// SchemaSource finds a writer schema by its registry id. Registry is one.
type SchemaSource interface {
	SchemaByID(ctx context.Context, id uint32) (*Schema, error)
}

// Decoder decodes Confluent wire-format messages to JSON, fetching writer
// schemas by id (the source caches them), so a new writer schema on a topic
// is picked up without a restart. Safe for concurrent use when its source is.
type Decoder struct {
	Source SchemaSource
}

// AppendJSON decodes msg and appends its JSON form to dst. On error dst is
// returned unchanged and the error names the schema id and what failed.
func (d *Decoder) AppendJSON(ctx context.Context, dst, msg []byte) ([]byte, error) {
	id, body, err := ParseWire(msg)
	if err != nil {
		return dst, err
	}
	s, err := d.Source.SchemaByID(ctx, id)
	if err != nil {
		return dst, fmt.Errorf("schema id %d: %w", id, err)
	}
	dst, err = s.AppendJSON(dst, body)
	if err != nil {
		return dst, fmt.Errorf("decoding avro body with schema id %d: %w", id, err)
	}
	return dst, nil
}

// AppendJSON decodes one binary body written with s and appends its JSON
// form to dst. The whole body must be one record.
func (s *Schema) AppendJSON(dst, body []byte) ([]byte, error) {
	return decodeBody(dst, s.Root, body)
}

var fieldRE = regexp.MustCompile(`field "([^"]*)"`)

// goavroPath extracts the field path from a goavro error, whose text may
// hold values and is therefore never passed on.
func goavroPath(err error) string {
	var names []string
	for _, m := range fieldRE.FindAllStringSubmatch(err.Error(), -1) {
		names = append(names, m[1])
	}
	if len(names) == 0 {
		return "at the record"
	}
	return "at " + strings.Join(names, ".")
}

// decodeError turns a goavro decoding error into a PathError naming the
// field and the kind of failure, never the bytes.
func decodeError(err error) error {
	msg := err.Error()
	path := strings.TrimPrefix(goavroPath(err), "at ")
	if path == "the record" {
		path = ""
	}
	switch {
	case strings.Contains(msg, "short buffer"):
		return &PathError{Path: path, Err: ErrTruncated}
	case strings.Contains(msg, "index ought"):
		return &PathError{Path: path, Err: fmt.Errorf("%w: enum or union index out of range", ErrSchemaMismatch)}
	case strings.Contains(msg, "negative"):
		return &PathError{Path: path, Err: fmt.Errorf("%w: negative length", ErrSchemaMismatch)}
	case strings.Contains(msg, "size") || strings.Contains(msg, "length"):
		return &PathError{Path: path, Err: fmt.Errorf("%w: length out of range", ErrSchemaMismatch)}
	}
	return &PathError{Path: path, Err: fmt.Errorf("%w: invalid data", ErrSchemaMismatch)}
}

// Encoder writes JSON records as Confluent wire-format messages under one
// schema and its registry id. Safe for concurrent use.
type Encoder struct {
	Schema *Schema
	ID     uint32
}

// Append appends the wire-format message for the JSON object rec to dst.
func (e *Encoder) Append(dst, rec []byte) ([]byte, error) {
	start := len(dst)
	dst = AppendWire(dst, e.ID)
	out, err := e.Schema.AppendBinary(dst, rec)
	if err != nil {
		return dst[:start], err
	}
	return out, nil
}
