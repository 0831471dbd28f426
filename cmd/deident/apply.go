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

	"github.com/deident/deident/internal/config"
	"github.com/deident/deident/transforms/route"
)

// exitRejected is apply's exit code when some records were rejected.
const exitRejected = 3

func applyCmd() *cobra.Command {
	var cfgPath, routeName, source, in, out, rejects string
	cmd := &cobra.Command{
		Use:   "apply --config FILE --route NAME [--in FILE] [--out FILE]",
		Short: "Apply one vendor route to JSON lines (stdin to stdout by default)",
		Long: `Apply one vendor route to JSON lines, the way a user tries a policy on a sample.
Records that cannot be de-identified (malformed JSON, a value of the wrong type,
an oversized line, invalid UTF-8) go to the rejects file with their line number
and the reason, never the value; apply goes on with the next record. Exit status:
0 when every record was applied, 3 when some were rejected, 1 on a fatal error.`,
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
			if source != "" {
				s, ok := cfg.Sources[source]
				if !ok {
					return fmt.Errorf("--source: no source %q in %s", source, cfgPath)
				}
				if !r.Allows(s.Category) {
					return fmt.Errorf("--source: route %s may not receive %s (source %s); its categories are %v", routeName, s.Category, source, r.Config.Categories)
				}
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
			if rejects == "" {
				rejects = "deident.rejects.jsonl"
				if out != "" && out != "-" {
					rejects = out + ".rejects.jsonl"
				}
			}
			start := time.Now()
			ks, err := newKanonSink(cfg, cfg.Vendors[routeName], in)
			if err != nil {
				return err
			}
			sum, err := applyLines(r, ks, src, dst, &lazyFile{path: rejects}, cfg.Limits.MaxRecordBytes)
			if err != nil {
				return err
			}
			if ks != nil {
				fmt.Fprintf(os.Stderr, "deident apply: %s\n", ks.summary())
			}
			secs := time.Since(start).Seconds()
			fmt.Fprintf(os.Stderr, "deident apply: route %s, policy %s: %d in, %d out, %d rejected; %d unnamed fields dropped; %s; %.0f records/s\n",
				r.Name, r.Version, sum.in, sum.out, sum.rejected, sum.dropped, sum.cache(), float64(sum.in)/secs)
			if sum.rejected > 0 {
				return &exitError{code: exitRejected, err: fmt.Errorf("%d of %d records rejected, see %s", sum.rejected, sum.in, rejects)}
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
	_ = cmd.MarkFlagRequired("config")
	_ = cmd.MarkFlagRequired("route")
	return cmd
}

type applySummary struct{ in, out, rejected, dropped, cacheHits, cacheMisses uint64 }

func (s applySummary) cache() string {
	if s.cacheHits+s.cacheMisses == 0 {
		return "pseudonym cache off or unused"
	}
	return fmt.Sprintf("pseudonym cache %.1f%% hits", 100*float64(s.cacheHits)/float64(s.cacheHits+s.cacheMisses))
}

// reject is one line of the rejects file: where and why, never the value.
type reject struct {
	Line   int64  `json:"line"`
	Bytes  int    `json:"bytes"`
	Reason string `json:"reason"`
}

// applyLines streams JSON lines from src through r to dst. Lines longer than
// maxRecord are discarded as they are read, so memory stays bounded.
// ks, when not nil, holds records for k-anonymity and decides what is
// written.
func applyLines(r *route.Route, ks *kanonSink, src io.Reader, dst io.Writer, rejects io.Writer, maxRecord int) (applySummary, error) {
	var sum applySummary
	a := r.NewApplier()
	br := bufio.NewReaderSize(src, 1<<16)
	bw := bufio.NewWriterSize(dst, 1<<16)
	rw := json.NewEncoder(rejects)
	var out, long []byte
	emit := func(rec []byte) error {
		if _, err := bw.Write(rec); err != nil {
			return fmt.Errorf("writing output: %w", err)
		}
		if err := bw.WriteByte('\n'); err != nil {
			return fmt.Errorf("writing output: %w", err)
		}
		return nil
	}
	for lineNo := int64(1); ; lineNo++ {
		line, size, err := readLine(br, &long, maxRecord)
		if err == io.EOF {
			break
		}
		if err != nil && !errors.Is(err, errLineTooLong) {
			return sum, fmt.Errorf("reading input line %d: %w", lineNo, err)
		}
		if len(bytes.TrimSpace(line)) == 0 && err == nil {
			continue
		}
		sum.in++
		if err == nil {
			out, err = a.Apply(out[:0], line)
		}
		if err == nil && ks != nil {
			if err = ks.add(emit, lineNo, out); err == nil {
				continue
			}
		}
		if err != nil {
			sum.rejected++
			if werr := rw.Encode(reject{Line: lineNo, Bytes: size, Reason: err.Error()}); werr != nil {
				return sum, fmt.Errorf("writing rejects: %w", werr)
			}
			continue
		}
		if err := emit(out); err != nil {
			return sum, err
		}
		sum.out++
	}
	if ks != nil {
		if err := ks.flush(emit); err != nil {
			return sum, err
		}
		sum.out = ks.out
	}
	sum.dropped = a.Stats.DroppedFields
	if c := a.Cache(); c != nil {
		sum.cacheHits, sum.cacheMisses = c.Hits, c.Misses
	}
	if c, ok := rejects.(io.Closer); ok {
		if err := c.Close(); err != nil {
			return sum, err
		}
	}
	return sum, bw.Flush()
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
