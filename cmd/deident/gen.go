package main

import (
	"bufio"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/deident/deident/internal/gen"
)

func genCmd() *cobra.Command {
	var (
		kind  string
		count int
		seed  uint64
		users int
		out   string
		form  string
	)
	cmd := &cobra.Command{
		Use:   "gen",
		Short: "Write synthetic telemetry (JSON lines, or an Avro container file) with skewed values, reproducible from a seed",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if kind != string(gen.Threat) && kind != string(gen.Workflow) {
				return fmt.Errorf("--kind must be threat or workflow, got %q", kind)
			}
			w := bufio.NewWriterSize(os.Stdout, 1<<16)
			if out != "" && out != "-" {
				f, err := os.Create(out)
				if err != nil {
					return err
				}
				defer f.Close()
				w = bufio.NewWriterSize(f, 1<<16)
			}
			opt := gen.Options{Kind: gen.Kind(kind), Count: count, Seed: seed, Users: users}
			switch form {
			case "json":
			case "avro":
				if err := writeAvro(w, opt); err != nil {
					return err
				}
				return w.Flush()
			default:
				return fmt.Errorf("--format must be json or avro, got %q", form)
			}
			if err := gen.Write(w, opt); err != nil {
				return fmt.Errorf("writing records: %w", err)
			}
			return w.Flush()
		},
	}
	cmd.Flags().StringVar(&kind, "kind", "threat", "threat (OCSF-like endpoint events) or workflow (invoice routing)")
	cmd.Flags().IntVar(&count, "count", 1000, "number of records")
	cmd.Flags().Uint64Var(&seed, "seed", 1, "random seed; the same seed gives the same bytes")
	cmd.Flags().IntVar(&users, "users", 5000, "distinct users")
	cmd.Flags().StringVarP(&out, "out", "o", "-", "output file, - for stdout")
	cmd.Flags().StringVar(&form, "format", "json", "json (JSON lines) or avro (an Avro object container file; --kind workflow, schema configs/avro/workflow.avsc)")
	return cmd
}
