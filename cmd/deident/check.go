package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/deident/deident/configs"
	"github.com/deident/deident/internal/avrocodec"
	"github.com/deident/deident/internal/config"
	"github.com/deident/deident/transforms/route"
)

func checkCmd() *cobra.Command {
	var cfgPath, sample, against string
	var presetNames []string
	cmd := &cobra.Command{
		Use:   "check --config FILE [--sample FILE] | check --against RUNNING NEW",
		Short: "Validate a config and print the effective policy per route",
		Long: `Validate a config and print, per vendor route, its policy version, keys (ids
only), categories and the action on every named field. With --sample (JSON lines),
list the input fields that no rule names: they are dropped (default deny). The
sample is JSON lines, an Avro object container file, or an Avro schema (.avsc):
for a schema, every field it declares (a map as NAME.*: its keys are data). Last, list per
cluster the Kafka ACLs the worker needs (kafka-acls commands): Read and Describe on each
source topic and Read on the consumer group, Write and Describe on each vendor topic and
on the dead-letter and quarantine topics.

With --against RUNNING, say what a worker running RUNNING would do on
reloading NEW (the argument, or --config): applied or refused, why, and the
policy changes; exits 1 when it would refuse.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				if cfgPath != "" {
					return fmt.Errorf("give the config as --config or as the argument, not both")
				}
				cfgPath = args[0]
			}
			if cfgPath == "" {
				return fmt.Errorf("a config is required (--config FILE)")
			}
			if against != "" {
				return checkReload(cmd.OutOrStdout(), against, cfgPath)
			}
			cfg, err := config.Load(cfgPath)
			if err != nil {
				return err
			}
			routes, err := route.CompileAll(cfg)
			if _, serr := sourceSchemas(cfg); serr != nil {
				err = errors.Join(err, serr)
			}
			if err != nil {
				return err
			}
			var fields map[string]int
			records := -1 // a schema sample has fields but no records
			if sample != "" {
				if fields, records, err = sampleFields(sample); err != nil {
					return err
				}
			}
			classes := map[string]configs.FieldClass{}
			for _, name := range presetNames {
				p, err := configs.LoadPreset(name)
				if err != nil {
					return err
				}
				for path, c := range p.Fields {
					classes[path] = c
				}
			}
			printPolicy(os.Stdout, cfg, routes, fields, records, classes)
			printACLs(os.Stdout, cfg)
			return nil
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "", "config file (YAML)")
	cmd.Flags().StringVar(&sample, "sample", "", "JSON lines, an Avro container file or an Avro schema (.avsc) whose fields are compared with the rules")
	cmd.Flags().StringVar(&against, "against", "", "the running config: show what reloading the config over it would do")
	cmd.Flags().StringSliceVar(&presetNames, "preset", []string{"ocsf", "ecs"}, "field classifications to check rules and sample fields against (ocsf, ecs, or a preset file)")
	return cmd
}

func printPolicy(w io.Writer, cfg *config.Config, routes map[string]*route.Route, fields map[string]int, records int, classes map[string]configs.FieldClass) {
	fmt.Fprintf(w, "config OK: %d sources, %d vendor routes\n", len(cfg.Sources), len(routes))
	for _, name := range sortedNames(cfg.Sources) {
		s := cfg.Sources[name]
		schema := ""
		if s.SchemaFile != "" {
			schema = ", plain bodies with schema file " + s.SchemaFile
		}
		fmt.Fprintf(w, "source %s: topic %q, category %s, format %s%s\n", name, s.Topic, s.Category, s.Format, schema)
	}
	for _, name := range sortedNames(routes) {
		r := routes[name]
		c := r.Config
		fmt.Fprintf(w, "\nroute %s (vendor %q)\n  policy version %s\n  purpose %s\n  categories %v\n  topic %q, output %s\n",
			name, c.Vendor, r.Version, c.Purpose, c.Categories, c.Topic, c.Output)
		for cat, why := range c.OptIn {
			fmt.Fprintf(w, "  opt-in %s: %s\n", cat, why)
		}
		ring := r.KeyRing()
		for i := range ring.Len() {
			from := "the beginning"
			if !ring.From(i).IsZero() {
				from = ring.From(i).Format("2006-01-02T15:04:05Z07:00")
			}
			retired := ""
			if ring.Retired(i) {
				retired = " (retired: key destroyed, records of this epoch are rejected)"
			}
			fmt.Fprintf(w, "  key %s from %s%s\n", ring.ID(i), from, retired)
		}
		var srcs []string
		for sn, s := range cfg.Sources {
			if r.Allows(s.Category) {
				srcs = append(srcs, sn)
			}
		}
		sort.Strings(srcs)
		fmt.Fprintf(w, "  receives from sources %v\n  fields:\n", srcs)
		for _, f := range c.Fields {
			fmt.Fprintf(w, "    %-28s %s\n", f.Path, describe(f))
			if cl, ok := classes[f.Path]; ok && configs.Sensitive(cl.Class) && f.Action == config.Keep {
				fmt.Fprintf(w, "    %-28s WARNING: kept as it is, but the presets classify it %s (suggested: %s)\n", "", cl.Class, cl.Suggest)
			}
		}
		fmt.Fprintf(w, "    %-28s drop (default deny)\n", "everything else")
		if fields != nil {
			var unnamed []string
			for p := range fields {
				if !covered(c.Fields, p) {
					unnamed = append(unnamed, p)
				}
			}
			sort.Strings(unnamed)
			if records < 0 {
				fmt.Fprintf(w, "  sample schema: %d fields, %d named by no rule (dropped):\n", len(fields), len(unnamed))
			} else {
				fmt.Fprintf(w, "  sample: %d records, %d fields, %d named by no rule (dropped):\n", records, len(fields), len(unnamed))
			}
			for _, p := range unnamed {
				note := ""
				if cl, ok := classes[p]; ok {
					note = fmt.Sprintf(" (%s; suggested: %s)", cl.Class, cl.Suggest)
				}
				if records < 0 {
					fmt.Fprintf(w, "    %s%s\n", p, note)
				} else {
					fmt.Fprintf(w, "    %-28s in %d records%s\n", p, fields[p], note)
				}
			}
		}
	}
}

func describe(f config.FieldRule) string {
	switch f.Action {
	case config.Pseudonymize:
		return fmt.Sprintf("pseudonymize (HMAC-SHA256, %d bits, %s, prefix %q, namespace %q, normalize %s)", f.Bits, f.Encoding, f.Prefix, f.Namespace, f.Normalize)
	case config.EmailSplit:
		return fmt.Sprintf("email_split (local part pseudonymized, %d bits, namespace %q; domain %s)", f.Bits, f.Namespace, f.Domain)
	case config.IPTruncate:
		return fmt.Sprintf("ip_truncate (IPv4 /%d, IPv6 /%d)", f.IPv4Bits, f.IPv6Bits)
	case config.IPPrefixPreserving:
		return "ip_prefix_preserving (Crypto-PAn)"
	case config.Generalize:
		switch {
		case f.TimeBucket != "":
			return "generalize time_bucket " + f.TimeBucket
		case f.NumericBucket != nil && f.NumericBucket.Width != 0:
			return fmt.Sprintf("generalize numeric_bucket width %v", f.NumericBucket.Width)
		case f.NumericBucket != nil:
			return fmt.Sprintf("generalize numeric_bucket edges %v", f.NumericBucket.Edges)
		case f.Hierarchy != nil:
			return fmt.Sprintf("generalize hierarchy %s level %d", f.Hierarchy.File, f.Hierarchy.Level)
		case f.Map != nil:
			return fmt.Sprintf("generalize map (%d entries, default %q)", len(f.Map.Entries), f.Map.Default)
		}
	}
	return string(f.Action)
}

// covered reports whether a rule names path or a field containing it. A
// map's path from a schema sample (NAME.*) counts as covered when a rule
// names the map or any key of it.
func covered(rules []config.FieldRule, path string) bool {
	if m, ok := strings.CutSuffix(path, ".*"); ok {
		for _, f := range rules {
			if strings.HasPrefix(f.Path, m+".") {
				return true
			}
		}
		path = m
	}
	for _, f := range rules {
		if f.Path == path || strings.HasPrefix(path, f.Path+".") || strings.HasPrefix(path, f.Path+"[]") {
			return true
		}
	}
	return false
}

// sampleFields lists the leaf paths of a sample with the number of records
// each appears in: JSON lines, or an Avro container file (its records, as
// the routes read them). An Avro schema (.avsc) gives every leaf it
// declares, with records -1. Only names are collected, never values.
func sampleFields(path string) (map[string]int, int, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 1<<16)
	if head, _ := br.Peek(len(avrocodec.OCFMagic)); avrocodec.IsOCF(head) {
		return sampleOCF(path, br)
	}
	if strings.HasSuffix(path, ".avsc") {
		text, err := io.ReadAll(br)
		if err != nil {
			return nil, 0, err
		}
		s, err := avrocodec.ParseSchema(string(text))
		if err != nil {
			return nil, 0, fmt.Errorf("sample %s: %w", path, err)
		}
		fields := map[string]int{}
		schemaLeaves("", s.Root, fields, map[*avrocodec.Type]bool{})
		return fields, -1, nil
	}
	sc := bufio.NewScanner(br)
	sc.Buffer(make([]byte, 1<<16), 16<<20)
	fields := map[string]int{}
	n := 0
	for line := 1; sc.Scan(); line++ {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		var v any
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
			return nil, 0, fmt.Errorf("sample %s line %d: not JSON", path, line)
		}
		n++
		seen := map[string]bool{}
		leaves("", v, seen)
		for p := range seen {
			fields[p]++
		}
	}
	return fields, n, sc.Err()
}

// sampleOCF is sampleFields for an Avro container file.
func sampleOCF(path string, r io.Reader) (map[string]int, int, error) {
	rd, err := avrocodec.NewOCFReader(r)
	if err != nil {
		return nil, 0, fmt.Errorf("sample %s: %w", path, err)
	}
	fields := map[string]int{}
	var rec []byte
	n := 0
	for {
		if rec, err = rd.Next(rec[:0]); err == io.EOF {
			return fields, n, nil
		} else if err != nil {
			return nil, 0, fmt.Errorf("sample %s: %w", path, err)
		}
		var v any
		if err := json.Unmarshal(rec, &v); err != nil {
			return nil, 0, fmt.Errorf("sample %s record %d: %w", path, n+1, err)
		}
		n++
		seen := map[string]bool{}
		leaves("", v, seen)
		for p := range seen {
			fields[p]++
		}
	}
}

// schemaLeaves adds the leaf paths an Avro type declares, as the routes
// address them: record fields by name, array elements with [], a union by
// its branches (a nullable field by its value), a map as NAME.* (its keys
// are data). A recursive record is followed once per path.
func schemaLeaves(prefix string, t *avrocodec.Type, out map[string]int, open map[*avrocodec.Type]bool) {
	switch t.Kind {
	case avrocodec.Record:
		if open[t] {
			out[prefix] = 1
			return
		}
		open[t] = true
		defer delete(open, t)
		for _, f := range t.Fields {
			p := f.Name
			if prefix != "" {
				p = prefix + "." + f.Name
			}
			schemaLeaves(p, f.Type, out, open)
		}
	case avrocodec.Array:
		schemaLeaves(prefix+"[]", t.Items, out, open)
	case avrocodec.Map:
		out[prefix+".*"] = 1
	case avrocodec.Union:
		for _, b := range t.Branches {
			if b.Kind != avrocodec.Null {
				schemaLeaves(prefix, b, out, open)
			}
		}
	default:
		out[prefix] = 1
	}
}

func leaves(prefix string, v any, out map[string]bool) {
	switch t := v.(type) {
	case map[string]any:
		for k, e := range t {
			p := k
			if prefix != "" {
				p = prefix + "." + k
			}
			leaves(p, e, out)
		}
	case []any:
		for _, e := range t {
			leaves(prefix+"[]", e, out)
		}
	default:
		out[prefix] = true
	}
}

func sortedNames[V any](m map[string]V) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
