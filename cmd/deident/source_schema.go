package main

import (
	"errors"
	"fmt"

	"github.com/deident/deident/internal/avrocodec"
	"github.com/deident/deident/internal/config"
)

// sourceSchemas parses the schema_file of every source that names one (its
// text was read by config.Load). The schema must be a record: a route
// addresses fields. Errors name the key path.
func sourceSchemas(cfg *config.Config) (map[string]*avrocodec.Schema, error) {
	out := map[string]*avrocodec.Schema{}
	var errs []error
	for _, name := range sortedNames(cfg.Sources) {
		s := cfg.Sources[name]
		if s.SchemaFile == "" {
			continue
		}
		schema, err := avrocodec.ParseSchema(s.SchemaText)
		if err == nil && schema.Root.Kind != avrocodec.Record {
			err = fmt.Errorf("the schema is a %s, want a record", schema.Root.Kind)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("sources.%s.schema_file: %s: %w", name, s.SchemaFile, err))
			continue
		}
		out[name] = schema
	}
	return out, errors.Join(errs...)
}

// decodeAvroBody decodes a plain Avro body (no Confluent header) written
// with the source's schema file to the JSON the routes read. A body that
// ends early, has bytes left over or does not match the schema fails with
// the field path, never a value; the record is then dead-lettered.
func decodeAvroBody(s *avrocodec.Schema, source string, maxBytes int) func(dst, v []byte) ([]byte, error) {
	return func(dst, v []byte) ([]byte, error) {
		if len(v) > maxBytes {
			return dst, fmt.Errorf("record of %d bytes exceeds limits.max_record_bytes %d", len(v), maxBytes)
		}
		out, err := s.AppendJSON(dst, v)
		if err != nil {
			return dst, fmt.Errorf("decoding avro body with the schema of sources.%s.schema_file: %w", source, err)
		}
		if n := len(out) - len(dst); n > maxBytes {
			return dst, fmt.Errorf("record decodes to %d bytes of JSON, more than limits.max_record_bytes %d", n, maxBytes)
		}
		return out, nil
	}
}
