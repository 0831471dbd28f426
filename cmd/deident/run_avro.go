package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"

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
// input record's writer schema and the route's rules, registered under the
// vendor topic's subject (<topic>-value), in the Confluent wire format.
func avroOutput(cfg *config.Config, name string, reg *avrocodec.Registry, formats map[string]config.Format, log *slog.Logger) (func(dst, out []byte, rec *pipeline.Record) ([]byte, error), error) {
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
	o := &avroEncoders{reg: reg, route: name, subject: avrocodec.ValueSubject(rc.Topic), rules: rc.Fields, log: log}
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
}

// avroEncoder is the output encoder for one input schema, or why there is
// none (a derivation error holds for every record of that schema).
type avroEncoder struct {
	enc avrocodec.Encoder
	err error
}

func (o *avroEncoders) encode(dst, out []byte, rec *pipeline.Record) ([]byte, error) {
	id, _, err := avrocodec.ParseWire(rec.Value)
	if err != nil {
		return dst, err
	}
	e, err := o.encoder(id)
	if err != nil {
		return dst, err
	}
	dst, err = e.Append(dst, out)
	if err != nil {
		return dst, fmt.Errorf("encoding the output under schema id %d (derived from input schema id %d): %w", e.ID, id, err)
	}
	return dst, nil
}

func (o *avroEncoders) encoder(id uint32) (*avrocodec.Encoder, error) {
	if v, ok := o.byID.Load(id); ok {
		e := v.(*avroEncoder)
		return &e.enc, e.err
	}
	ctx := context.Background()
	in, err := o.reg.SchemaByID(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("input schema id %d: %w", id, err)
	}
	schema, warnings, err := avrocodec.Derive(in, o.route, o.rules)
	if err != nil {
		// The same for every record of this schema: remembered.
		e := &avroEncoder{err: fmt.Errorf("deriving the output schema from input schema id %d: %w", id, err)}
		o.byID.Store(id, e)
		return nil, e.err
	}
	outID, err := o.reg.Register(ctx, o.subject, schema)
	if err != nil {
		return nil, err // the registry may come back: not remembered
	}
	for _, w := range warnings {
		o.log.Warn("avro output schema", "route", o.route, "input_schema_id", id, "warning", w)
	}
	o.log.Info("avro output schema registered", "route", o.route, "subject", o.subject, "input_schema_id", id, "output_schema_id", outID)
	e := &avroEncoder{enc: avrocodec.Encoder{Schema: schema, ID: outID}}
	v, _ := o.byID.LoadOrStore(id, e)
	return &v.(*avroEncoder).enc, nil
}
