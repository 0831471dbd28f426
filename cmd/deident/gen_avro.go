package main

import (
	"crypto/sha256"
	"fmt"
	"io"
	"strconv"

	"github.com/deident/deident/configs"
	"github.com/deident/deident/internal/avrocodec"
	"github.com/deident/deident/internal/gen"
)

// writeAvro writes opt.Count workflow events as an Avro object container
// file under configs/avro/workflow.avsc. The sync marker derives from the
// options, so the same seed gives the same bytes.
func writeAvro(w io.Writer, opt gen.Options) error {
	if opt.Kind != gen.Workflow {
		return fmt.Errorf("--format avro: only --kind workflow has an Avro schema (configs/avro/workflow.avsc)")
	}
	s, err := avrocodec.ParseSchema(configs.WorkflowSchema)
	if err != nil {
		return err
	}
	sum := sha256.Sum256([]byte("deident gen " + strconv.FormatUint(opt.Seed, 10) + " " + strconv.Itoa(opt.Users)))
	ow, err := avrocodec.NewOCFWriter(w, s, [16]byte(sum[:16]), "deflate")
	if err != nil {
		return err
	}
	g := gen.New(opt)
	var rec []byte
	for i := range opt.Count {
		rec = g.AppendWorkflowAvroJSON(rec[:0])
		if err := ow.Write(rec); err != nil {
			return fmt.Errorf("generated record %d: %w", i+1, err) // a bug: the generator and the schema disagree
		}
	}
	return ow.Flush()
}
