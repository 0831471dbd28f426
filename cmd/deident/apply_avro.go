package main

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/deident/deident/internal/avrocodec"
	"github.com/deident/deident/internal/config"
	"github.com/deident/deident/transforms/route"
)

// avroReader reads Avro records as JSON: an object container file, or
// plain bodies with a source's schema file.
type avroReader interface {
	Schema() *avrocodec.Schema
	Next(dst []byte) ([]byte, error)
}

// avroFormats decides apply's input and output formats and opens the Avro
// sides. The input is Avro when the --source says avro, or, without
// --source, when it starts with the container magic: an object container
// file when it starts like one, else plain bodies back to back read with
// the source's schema file (schema, nil when the source has none). The
// output is Avro when the route's output is avro. Avro output needs Avro
// input: its schema derives from the input's schema and the route's rules.
func avroFormats(in *bufio.Reader, dst io.Writer, r *route.Route, src *config.Source, schema *avrocodec.Schema) (avroReader, *avrocodec.OCFWriter, error) {
	head, _ := in.Peek(len(avrocodec.OCFMagic))
	ocf := avrocodec.IsOCF(head)
	avroIn := ocf
	if src != nil {
		avroIn = src.Format == config.Avro
	}
	var rd avroReader
	switch {
	case avroIn && !ocf && schema != nil:
		rd = avrocodec.NewBodyReader(in, schema)
	case avroIn:
		var err error
		if rd, err = avrocodec.NewOCFReader(in); err != nil {
			return nil, nil, fmt.Errorf("--in: %w", err)
		}
	}
	if r.Config.Output != config.Avro {
		return rd, nil, nil
	}
	if rd == nil {
		return nil, nil, fmt.Errorf("route %s writes avro, which needs Avro input: a container file, or plain bodies with a source's schema_file (its output schema is derived from the input schema)", r.Name)
	}
	if r.Config.KAnon != nil {
		return nil, nil, fmt.Errorf("route %s: avro output with k_anonymity is not supported yet", r.Name)
	}
	schema, warnings, err := avrocodec.Derive(rd.Schema(), r.Name, r.Config.Fields)
	if err != nil {
		return nil, nil, fmt.Errorf("deriving route %s's avro output schema: %w", r.Name, err)
	}
	for _, w := range warnings {
		fmt.Fprintf(os.Stderr, "deident apply: route %s: %s\n", r.Name, w)
	}
	// The sync marker comes from the policy version, so the same input,
	// config and keys give the same bytes.
	var sync [16]byte
	v, _ := hex.DecodeString(r.Version[1:])
	copy(sync[:], v)
	copy(sync[8:], "deident!")
	w, err := avrocodec.NewOCFWriter(dst, schema, sync, "deflate")
	if err != nil {
		return nil, nil, err
	}
	return rd, w, nil
}

// runAvro is run's loop for an Avro container input: a record that decodes
// but has no JSON form is rejected with its record number; a corrupt
// container stops apply.
func (j *applyJob) runAvro(a *route.Applier, rw *json.Encoder) error {
	var rec, out []byte
	for n := int64(1); ; n++ {
		var err error
		rec, err = j.avroIn.Next(rec[:0])
		if err == io.EOF {
			return nil
		}
		var pe *avrocodec.PathError
		if err != nil && !errors.As(err, &pe) {
			return fmt.Errorf("--in: %w", err)
		}
		if err != nil {
			err = fmt.Errorf("decoding avro record: %w", err)
		}
		if out, err = j.one(a, rw, n, len(rec), rec, err, out); err != nil {
			return err
		}
	}
}
