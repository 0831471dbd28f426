package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/deident/deident/internal/avrocodec"
	"github.com/deident/deident/internal/config"
	"github.com/deident/deident/transforms/gate"
	"github.com/deident/deident/transforms/route"
)

// Exit codes of apply beyond 0 (all applied) and 1 (a fatal error).
const (
	// exitRejected: some records were rejected or quarantined.
	exitRejected = 3
	// exitFailClosed: the gate's quarantine rate passed its threshold and
	// apply stopped; nothing after the tripping record was written.
	exitFailClosed = 4
)

func applyCmd() *cobra.Command {
	var cfgPath, routeName, source, in, out, rejects, quarantine string
	cmd := &cobra.Command{
		Use:   "apply --config FILE --route NAME [--in FILE] [--out FILE]",
		Short: "Apply one vendor route to JSON lines or an Avro container file (stdin to stdout by default)",
		Long: `Apply one vendor route to JSON lines, the way a user tries a policy on a sample.
Records that cannot be de-identified (malformed JSON, a value of the wrong type,
an oversized line, invalid UTF-8) go to the rejects file with their line number
and the reason, never the value; apply goes on with the next record. The route's
re-identification gate checks every output; a record it fails goes to the
quarantine file (internal: it holds the de-identified record, the reason codes and
the field paths). Input is an Avro object container file when --source says avro
or the input starts like one; output is one when the route's output is avro (its
schema derived from the input's and the route's rules); a reject then names the
record number. Exit status: 0 when every record was applied, 3 when some were
rejected or quarantined, 4 when the gate failed closed, 1 on a fatal error.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.Load(cfgPath)
			if err != nil {
				return err
			}
			routes, err := route.CompileAll(cfg)
			if err != nil {
				return err
			}
			r, ok := routes[routeName]
			if !ok {
				return fmt.Errorf("--route: no vendor route %q in %s", routeName, cfgPath)
			}
			var srcCfg *config.Source
			var srcSchema *avrocodec.Schema
			if source != "" {
				s, ok := cfg.Sources[source]
				srcCfg = &s
				if !ok {
					return fmt.Errorf("--source: no source %q in %s", source, cfgPath)
				}
				if !r.Allows(s.Category) {
					return fmt.Errorf("--source: route %s may not receive %s (source %s); its categories are %v", routeName, s.Category, source, r.Config.Categories)
				}
				schemas, err := sourceSchemas(cfg)
				if err != nil {
					return err
				}
				srcSchema = schemas[source]
			}
			var src io.Reader = os.Stdin
			if in != "" && in != "-" {
				f, err := os.Open(in)
				if err != nil {
					return err
				}
				defer f.Close()
				src = f
			}
			var dst io.Writer = os.Stdout
			if out != "" && out != "-" {
				f, err := os.Create(out)
				if err != nil {
					return err
				}
				defer f.Close()
				dst = f
			}
			rejects = defaultPath(rejects, out, "rejects")
			quarantine = defaultPath(quarantine, out, "quarantine")
			start := time.Now()
			ks, err := newKanonSink(cfg, cfg.Vendors[routeName], in)
			if err != nil {
				return err
			}
			g, err := gate.New(r.Name, r.Config)
			if err != nil {
				return err
			}
			rf, qf := &lazyFile{path: rejects}, &lazyFile{path: quarantine}
			inBuf := bufio.NewReaderSize(src, 1<<16)
			avroIn, avroOut, err := avroFormats(inBuf, dst, r, srcCfg, srcSchema)
			if err != nil {
				return err
			}
			job := &applyJob{r: r, ks: ks, gate: g, maxRecord: cfg.Limits.MaxRecordBytes, rejects: rf, quarantine: qf, avroIn: avroIn, avroOut: avroOut}
			sum, runErr := job.run(inBuf, dst)
			if err := errors.Join(rf.Close(), qf.Close()); err != nil && runErr == nil {
				runErr = err
			}
			var trip *gate.TripError
			if runErr != nil && !errors.As(runErr, &trip) {
				return runErr
			}
			if ks != nil {
				fmt.Fprintf(os.Stderr, "deident apply: %s\n", ks.summary())
			}
			secs := time.Since(start).Seconds()
			fmt.Fprintf(os.Stderr, "deident apply: route %s, policy %s: %d in, %d out, %d rejected, %d quarantined; %d unnamed fields dropped; %s; %.0f records/s\n",
				r.Name, r.Version, sum.in, sum.out, sum.rejected, sum.quarantined, sum.dropped, sum.cache(), float64(sum.in)/secs)
			g.Stats().Each(func(reason string, n uint64) {
				fmt.Fprintf(os.Stderr, "deident apply: gate %-18s %d\n", reason, n)
			})
			switch {
			case trip != nil:
				return &exitError{code: exitFailClosed, err: fmt.Errorf("route %s failed closed: %w; see %s", r.Name, runErr, quarantine)}
			case sum.rejected > 0 || sum.quarantined > 0:
				return &exitError{code: exitRejected, err: fmt.Errorf("%d of %d records rejected (see %s), %d quarantined (see %s)", sum.rejected, sum.in, rejects, sum.quarantined, quarantine)}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "", "config file (YAML)")
	cmd.Flags().StringVar(&routeName, "route", "", "vendor route to apply")
	cmd.Flags().StringVar(&source, "source", "", "source the records come from; checks the route may receive its category")
	cmd.Flags().StringVar(&in, "in", "-", "input JSON lines, - for stdin")
	cmd.Flags().StringVar(&out, "out", "-", "output JSON lines, - for stdout")
	cmd.Flags().StringVar(&rejects, "rejects", "", "rejects file (default OUT.rejects.jsonl, or deident.rejects.jsonl with stdout)")
	cmd.Flags().StringVar(&quarantine, "quarantine", "", "quarantine file for outputs the gate fails (default OUT.quarantine.jsonl, or deident.quarantine.jsonl)")
	_ = cmd.MarkFlagRequired("config")
	_ = cmd.MarkFlagRequired("route")
	return cmd
}

// defaultPath is flag when set, else OUT.kind.jsonl, or deident.kind.jsonl
// when the output is stdout.
func defaultPath(flag, out, kind string) string {
	switch {
	case flag != "":
		return flag
	case out != "" && out != "-":
		return out + "." + kind + ".jsonl"
	}
	return "deident." + kind + ".jsonl"
}

type applySummary struct {
	in, out, rejected, quarantined, dropped uint64
	cacheHits, cacheMisses                  uint64
}

func (s applySummary) cache() string {
	if s.cacheHits+s.cacheMisses == 0 {
		return "pseudonym cache off or unused"
	}
	return fmt.Sprintf("pseudonym cache %.1f%% hits", 100*float64(s.cacheHits)/float64(s.cacheHits+s.cacheMisses))
}

// reject is one line of the rejects file: where and why, never the value.
// Line is the record number for Avro container input.
type reject struct {
	Line   int64  `json:"line"`
	Bytes  int    `json:"bytes"`
	Reason string `json:"reason"`
}

// quarantined is one line of the quarantine file. The file is internal and
// never vendor-bound: it holds the de-identified record so an operator can
// see what the gate caught; reasons and paths name no value.
type quarantined struct {
	Line    int64  `json:"line"`
	Reasons string `json:"reasons"`
	Paths   string `json:"paths"`
	Record  string `json:"record"`
}

// applyJob streams JSON lines through a route, its k-anonymity stage (when
// configured) and its gate. Lines longer than maxRecord are discarded as
// they are read, so memory stays bounded.
type applyJob struct {
	r                   *route.Route
	ks                  *kanonSink // nil: no k-anonymity
	gate                *gate.Gate
	maxRecord           int
	rejects, quarantine io.Writer
	// avroIn, when set, is the input (an Avro container file, or plain
	// bodies with the source's schema file) instead of JSON lines; avroOut,
	// when set, receives the output instead of JSON lines.
	avroIn  avroReader
	avroOut *avrocodec.OCFWriter

	check *gate.Checker
	tally *gate.Tallier
	bw    *bufio.Writer
	qw    *json.Encoder
	sum   applySummary
}

// run processes src into dst. It stops early only on an I/O error or when
// the gate fails closed (a *gate.TripError), flushing what passed before.
func (j *applyJob) run(src io.Reader, dst io.Writer) (applySummary, error) {
	a := j.r.NewApplier()
	if j.gate.Enabled() {
		// Off, apply runs no gate code at all, as the worker then has no
		// Checker: what the gate costs is measured against that.
		j.check, j.tally = j.gate.NewChecker(), j.gate.NewTallier()
		a.SetObserver(j.check) // the gate learns raw identifiers as the route reads them
	}
	j.bw = bufio.NewWriterSize(dst, 1<<16)
	j.qw = json.NewEncoder(j.quarantine)
	br := bufio.NewReaderSize(src, 1<<16)
	rw := json.NewEncoder(j.rejects)
	var out, long []byte
	err := func() error {
		if j.avroIn != nil {
			return j.runAvro(a, rw)
		}
		for lineNo := int64(1); ; lineNo++ {
			line, size, err := readLine(br, &long, j.maxRecord)
			if err == io.EOF {
				return nil
			}
			if err != nil && !errors.Is(err, errLineTooLong) {
				return fmt.Errorf("reading input line %d: %w", lineNo, err)
			}
			if len(bytes.TrimSpace(line)) == 0 && err == nil {
				continue
			}
			if out, err = j.one(a, rw, lineNo, size, line, err, out); err != nil {
				return err
			}
		}
	}()
	if err == nil && j.ks != nil {
		err = j.ks.flush(j.emitClass)
	}
	if j.ks != nil {
		j.sum.out = j.ks.out
	}
	if j.tally != nil {
		_ = j.tally.Flush() // the gate's stats count every record; a trip was returned when it happened
	}
	j.sum.dropped = a.Stats.DroppedFields
	if c := a.Cache(); c != nil {
		j.sum.cacheHits, j.sum.cacheMisses = c.Hits, c.Misses
	}
	if ferr := j.bw.Flush(); err == nil && ferr != nil {
		err = fmt.Errorf("writing output: %w", ferr)
	}
	if j.avroOut != nil {
		if ferr := j.avroOut.Flush(); err == nil && ferr != nil {
			err = fmt.Errorf("writing output: %w", ferr)
		}
	}
	return j.sum, err
}

// one applies the route, the k-anonymity stage and the gate to one input
// record (readErr: why it could not be read whole), rejecting what cannot
// be de-identified. It returns out for reuse and a fatal error only.
func (j *applyJob) one(a *route.Applier, rw *json.Encoder, lineNo int64, size int, rec []byte, readErr error, out []byte) ([]byte, error) {
	j.sum.in++
	err := readErr
	if err == nil {
		out, err = a.Apply(out[:0], rec)
	}
	if err == nil && j.ks != nil {
		err = j.ks.add(j.emitClass, lineNo, out)
		if err == nil {
			return out, nil
		}
	}
	if err != nil {
		var trip *gate.TripError
		if errors.As(err, &trip) {
			return out, err
		}
		return out, j.reject(rw, lineNo, size, err)
	}
	var v gate.Verdict
	if j.check != nil {
		v = j.check.Check(out)
	}
	_, err = j.emit(lineNo, v, out)
	return out, err
}

func (j *applyJob) reject(rw *json.Encoder, lineNo int64, size int, reason error) error {
	j.sum.rejected++
	if werr := rw.Encode(reject{Line: lineNo, Bytes: size, Reason: reason.Error()}); werr != nil {
		return fmt.Errorf("writing rejects: %w", werr)
	}
	return nil
}

// emit writes rec when the gate passes it, or quarantines it.
func (j *applyJob) emit(line int64, v gate.Verdict, rec []byte) (passed bool, err error) {
	var trip error
	if j.tally != nil {
		trip = j.tally.Tally(v)
	}
	if !v.Pass() {
		j.sum.quarantined++
		if err := j.qw.Encode(quarantined{line, v.Reasons.String(), v.Paths(), string(rec)}); err != nil {
			return false, fmt.Errorf("writing quarantine: %w", err)
		}
	}
	if trip != nil {
		return false, trip // fail closed: nothing after this record
	}
	if !v.Pass() {
		return false, nil
	}
	if j.avroOut != nil {
		if err := j.avroOut.Write(rec); err != nil {
			var pe *avrocodec.PathError
			if !errors.As(err, &pe) {
				return false, err
			}
			return false, j.reject(json.NewEncoder(j.rejects), line, len(rec), fmt.Errorf("encoding avro output: %w", err))
		}
		if j.ks == nil {
			j.sum.out++
		}
		return true, nil
	}
	if _, err := j.bw.Write(rec); err != nil {
		return false, fmt.Errorf("writing output: %w", err)
	}
	if err := j.bw.WriteByte('\n'); err != nil {
		return false, fmt.Errorf("writing output: %w", err)
	}
	if j.ks == nil {
		j.sum.out++
	}
	return true, nil
}

// emitClass checks an output of the k-anonymity stage: a released record
// with its class's distinct-entity count, or an aggregate (or late count).
func (j *applyJob) emitClass(line int64, aggregate bool, entities int, rec []byte) (bool, error) {
	var v gate.Verdict
	switch {
	case j.check == nil:
	case aggregate:
		v = j.check.CheckAggregate(rec, -1)
	default:
		v = j.check.CheckClass(rec, entities)
	}
	return j.emit(line, v, rec)
}

var errLineTooLong = errors.New("line exceeds max_record_bytes")

// readLine returns the next line without its newline. A line longer than
// max is consumed and discarded; its size and errLineTooLong are returned.
func readLine(br *bufio.Reader, long *[]byte, max int) ([]byte, int, error) {
	line, err := br.ReadSlice('\n')
	if err == nil || (err == io.EOF && len(line) > 0) {
		line = bytes.TrimSuffix(line, []byte{'\n'})
		if len(line) > max {
			return nil, len(line), fmt.Errorf("%w: %d bytes, limit %d", errLineTooLong, len(line), max)
		}
		return line, len(line), nil
	}
	if err != bufio.ErrBufferFull {
		return nil, 0, err
	}
	*long = append((*long)[:0], line...)
	size := len(line)
	for {
		line, err = br.ReadSlice('\n')
		size += len(line)
		if size <= max+1 {
			*long = append(*long, line...)
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil && err != io.EOF {
			return nil, size, err
		}
		break
	}
	l := bytes.TrimSuffix(*long, []byte{'\n'})
	if bytes.HasSuffix(line, []byte{'\n'}) {
		size--
	}
	if size > max {
		return nil, size, fmt.Errorf("%w: %d bytes, limit %d", errLineTooLong, size, max)
	}
	return l, size, nil
}

// lazyFile creates its file on the first write, so a clean run leaves none.
type lazyFile struct {
	path string
	f    *os.File
}

func (l *lazyFile) Write(p []byte) (int, error) {
	if l.f == nil {
		f, err := os.Create(l.path)
		if err != nil {
			return 0, err
		}
		l.f = f
	}
	return l.f.Write(p)
}

func (l *lazyFile) Close() error {
	if l.f == nil {
		return nil
	}
	return l.f.Close()
}
