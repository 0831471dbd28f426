package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/deident/deident/internal/avrocodec"
	"github.com/deident/deident/internal/config"
	"github.com/deident/deident/pipeline"
)

// decodeAvro decodes a Confluent wire-format value (magic byte, schema id,
// binary body) to the JSON the routes read, with the writer schema the
// registry holds under the id (cached; a new id is fetched when it first
// appears, so a new writer schema needs no restart). Failures name the
// schema id and a field path or the registry's answer, never a value: an
// id the registry does not know, a body cut short or not matching its
// schema, a registry that is down. The record is then dead-lettered.
func decodeAvro(dec *avrocodec.Decoder, maxBytes int) func(dst, v []byte) ([]byte, error) {
	return func(dst, v []byte) ([]byte, error) {
		if len(v) > maxBytes {
			return dst, fmt.Errorf("record of %d bytes exceeds limits.max_record_bytes %d", len(v), maxBytes)
		}
		// The registry client bounds each request with its own timeout.
		out, err := dec.AppendJSON(context.Background(), dst, v)
		if err != nil {
			return dst, err
		}
		if n := len(out) - len(dst); n > maxBytes {
			return dst, fmt.Errorf("record decodes to %d bytes of JSON, more than limits.max_record_bytes %d", n, maxBytes)
		}
		return out, nil
	}
}

// avroOutput checks that route name can write Avro and returns its
// Encode: the route's output encoded under the schema derived from the
// input record's writer schema (by its schema id, or the schema file of
// its topic's source, fileSchemas) and the route's rules, registered under
// the vendor topic's subject (<topic>-value), in the Confluent wire format.
func avroOutput(cfg *config.Config, name string, reg *avrocodec.Registry, formats map[string]config.Format, fileSchemas map[string]*avrocodec.Schema, log *slog.Logger) (func(dst, out []byte, rec *pipeline.Record) ([]byte, error), error) {
	rc := cfg.Vendors[name]
	p := "vendors." + name + ".output"
	var errs []string
	if reg == nil {
		errs = append(errs, "avro needs kafka.schema_registry (the output schema is registered there)")
	}
	if rc.KAnon != nil {
		errs = append(errs, "avro with k_anonymity is not supported yet")
	}
	for _, c := range rc.Categories {
		if f := formats[string(c)]; f != "" && f != config.Avro {
			errs = append(errs, fmt.Sprintf("avro needs Avro input (the output schema derives from the writer schema), but category %s comes from a %s source", c, f))
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%s: %s", p, strings.Join(errs, "; "))
	}
	o := &avroEncoders{reg: reg, route: name, subject: avrocodec.ValueSubject(rc.Topic), rules: rc.Fields, log: log, files: map[string]*fileEncoder{}}
	for topic, s := range fileSchemas {
		o.files[topic] = &fileEncoder{schema: s}
	}
	return o.encode, nil
}

// avroEncoders holds a route's output encoders by input schema id. Safe
// for concurrent use (one per route, shared by the claims).
type avroEncoders struct {
	reg     *avrocodec.Registry
	route   string
	subject string
	rules   []config.FieldRule
	log     *slog.Logger
	byID    sync.Map // input schema id -> *avroEncoder
	// files holds the encoders of sources with a schema file, by topic
	// (fixed at start-up; each derives and registers once, on first use).
	files map[string]*fileEncoder
}

// fileEncoder is the output encoder for a source's schema file.
type fileEncoder struct {
	schema *avrocodec.Schema
	mu     sync.Mutex                  // held while deriving and registering
	enc    atomic.Pointer[avroEncoder] // nil until derived and registered
}

// avroEncoder is the output encoder for one input schema, or why there is
// none (a derivation error holds for every record of that schema).
type avroEncoder struct {
	enc avrocodec.Encoder
	err error
}

func (o *avroEncoders) encode(dst, out []byte, rec *pipeline.Record) ([]byte, error) {
	var e *avrocodec.Encoder
	var id uint32
	var err error
	f := o.files[rec.Topic]
	if f != nil {
		e, err = o.fileEncoder(f)
	} else {
		if id, _, err = avrocodec.ParseWire(rec.Value); err != nil {
			return dst, err
		}
		e, err = o.encoder(id)
	}
	if err != nil {
		return dst, err
	}
	dst, err = e.Append(dst, out)
	if err != nil {
		from := "the source's schema file"
		if f == nil {
			from = fmt.Sprintf("input schema id %d", id)
		}
		return dst, fmt.Errorf("encoding the output under schema id %d (derived from %s): %w", e.ID, from, err)
	}
	return dst, nil
}

func (o *avroEncoders) encoder(id uint32) (*avrocodec.Encoder, error) {
	if v, ok := o.byID.Load(id); ok {
		e := v.(*avroEncoder)
		return &e.enc, e.err
	}
	in, err := o.reg.SchemaByID(context.Background(), id)
	if err != nil {
		return nil, fmt.Errorf("input schema id %d: %w", id, err)
	}
	e, err := o.derive(in, fmt.Sprintf("input schema id %d", id), "input_schema_id", id)
	if err != nil {
		return nil, err // the registry may come back: not remembered
	}
	v, _ := o.byID.LoadOrStore(id, e)
	e = v.(*avroEncoder)
	return &e.enc, e.err
}

func (o *avroEncoders) fileEncoder(f *fileEncoder) (*avrocodec.Encoder, error) {
	e := f.enc.Load()
	if e == nil {
		f.mu.Lock()
		defer f.mu.Unlock()
		if e = f.enc.Load(); e == nil {
			var err error
			if e, err = o.derive(f.schema, "the source's schema file", "input_schema", "schema_file"); err != nil {
				return nil, err
			}
			f.enc.Store(e)
		}
	}
	return &e.enc, e.err
}

// derive derives the route's output schema from in and registers it. A
// derivation error holds for every record of in, so it is returned inside
// the encoder (to be remembered); a registry error is returned alone.
func (o *avroEncoders) derive(in *avrocodec.Schema, from string, logKey string, logVal any) (*avroEncoder, error) {
	schema, warnings, err := avrocodec.Derive(in, o.route, o.rules)
	if err != nil {
		return &avroEncoder{err: fmt.Errorf("deriving the output schema from %s: %w", from, err)}, nil
	}
	outID, err := o.reg.Register(context.Background(), o.subject, schema)
	if err != nil {
		return nil, err
	}
	for _, w := range warnings {
		o.log.Warn("avro output schema", "route", o.route, logKey, logVal, "warning", w)
	}
	o.log.Info("avro output schema registered", "route", o.route, "subject", o.subject, logKey, logVal, "output_schema_id", outID)
	return &avroEncoder{enc: avrocodec.Encoder{Schema: schema, ID: outID}}, nil
}
