package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/deident/deident/internal/audit"
	"github.com/deident/deident/internal/config"
	"github.com/deident/deident/internal/kafkaconn"
)

// exitAuditFindings is audit's exit code when the report is not clean.
const exitAuditFindings = 2

func auditCmd() *cobra.Command {
	var cfgPath, routeName, fromS, toS, reportDir, policiesDir string
	var idle, grace time.Duration
	cmd := &cobra.Command{
		Use:   "audit --config FILE --route NAME --from TIME|OFFSET --to TIME|OFFSET --report DIR [--policies DIR]",
		Short: "Check what a vendor topic holds against what the policy re-derives from the sources",
		Long: `Read the route's vendor topic over [--from, --to) without a consumer group, and
re-derive every record from its source (its deident-src header) under the policy
version it claims (deident-policy): the current config's route when the version
matches, else a config in --policies DIR whose route has that version. Report:
records matched byte for byte (and key id), mismatched (with the field paths that
differ, never values), without provenance, unverifiable (unknown policy, source
gone), records the gate fails, and source records in range that should have
produced output but have none (time ranges only; outputs published up to
--grace after --to count). Vendor records made under a key retired since
(deident keys retire) whose source lies in that retired epoch, or is gone, are
counted as crypto-shredded: by design they cannot be re-derived, and they are
not a finding.

Writes DIR/report.json and DIR/report.html (self-contained: inline CSS and SVG,
no network). Exits 2 when anything is found, 0 when the report is clean.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			from, to, err := parseRange(fromS, toS)
			if err != nil {
				return err
			}
			cfg, err := config.Load(cfgPath)
			if err != nil {
				return err
			}
			if len(cfg.Clusters) == 0 && len(cfg.Kafka.Brokers) == 0 {
				return errors.New("kafka.brokers: at least one broker is required")
			}
			// One client reads the vendor topic and the sources.
			if rcl, scl := cfg.RouteCluster(routeName), cfg.SourceCluster(); rcl != scl {
				return fmt.Errorf("vendors.%s.cluster: audit reads the vendor topic and the sources with one connection; %s and %s differ (not supported yet)", routeName, rcl, scl)
			}
			conn, err := kafkaconn.New(cfg, cfg.SourceCluster())
			if err != nil {
				return err
			}
			cur, policies, notes, err := audit.LoadPolicies(cfg, cfgPath, routeName, policiesDir)
			if err != nil {
				return err
			}
			if err := os.MkdirAll(reportDir, 0o755); err != nil {
				return fmt.Errorf("--report: %w", err)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			rep, err := audit.Audit(ctx, audit.Options{
				Config:   cfg,
				Current:  cur,
				Policies: policies,
				Client:   conn.Client(30 * time.Second),
				Reader:   audit.Reader{Brokers: conn.Brokers, Dialer: conn.Dialer(), IdleTimeout: idle},
				From:     from,
				To:       to,
				Grace:    grace,
			})
			if err != nil {
				return err
			}
			rep.Notes = append(rep.Notes, notes...)
			if err := writeReport(reportDir, rep); err != nil {
				return err
			}
			printAuditSummary(cmd.OutOrStdout(), rep, reportDir)
			if !rep.Clean() {
				return &exitError{code: exitAuditFindings, err: fmt.Errorf("audit of %s found %d mismatched, %d without provenance, %d unverifiable, %d failing the gate, %d missing; see %s",
					routeName, rep.Summary.Mismatched, rep.Summary.NoProvenance, rep.Summary.Unverified, rep.Summary.GateFailures, rep.Summary.Missing, filepath.Join(reportDir, "report.html"))}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfgPath, "config", "", "config file (YAML)")
	f.StringVar(&routeName, "route", "", "vendor route to audit")
	f.StringVar(&fromS, "from", "", "start of the range, inclusive: an offset of the vendor topic or an RFC 3339 time")
	f.StringVar(&toS, "to", "", "end of the range, exclusive: an offset of the vendor topic or an RFC 3339 time")
	f.StringVar(&reportDir, "report", "", "directory for report.json and report.html")
	f.StringVar(&policiesDir, "policies", "", "directory of older config files, for records that claim an older policy version")
	f.DurationVar(&idle, "idle-timeout", 10*time.Second, "give up when a partition yields no record for this long (three times, each with a new reader) before the end of its range")
	f.DurationVar(&grace, "grace", time.Minute, "with a time --to, also read vendor records published this long after it, to find outputs of sources just before it")
	for _, name := range []string{"config", "route", "report"} {
		_ = cmd.MarkFlagRequired(name)
	}
	return cmd
}

func writeReport(dir string, rep *audit.Report) error {
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding report: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "report.json"), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("writing report: %w", err)
	}
	f, err := os.Create(filepath.Join(dir, "report.html"))
	if err != nil {
		return fmt.Errorf("writing report: %w", err)
	}
	if err := audit.WriteHTML(f, rep); err != nil {
		f.Close()
		return fmt.Errorf("writing report.html: %w", err)
	}
	return f.Close()
}

func printAuditSummary(w io.Writer, rep *audit.Report, dir string) {
	s := rep.Summary
	fmt.Fprintf(w, "audit %s (vendor topic %s, policy %s)\n", rep.Route, rep.VendorTopic, rep.Policy)
	fmt.Fprintf(w, "  vendor records %d: matched %d, duplicates %d, mismatched %d, no provenance %d, unverifiable %d, crypto-shredded %d; failing the gate %d\n",
		s.VendorRecords, s.Matched, s.Duplicates, s.Mismatched, s.NoProvenance, s.Unverified, s.CryptoShredded, s.GateFailures)
	fmt.Fprintf(w, "  source records %d: delivered %d, quarantined %d, failed %d, missing %d\n", s.SourceRecords, s.Delivered, s.Quarantined, s.Failed, s.Missing)
	for _, m := range rep.Mismatches {
		fmt.Fprintf(w, "  mismatch %s/%d/%d (src %s, policy %s): %v\n", rep.VendorTopic, m.Partition, m.Offset, m.Src, m.Policy, m.Paths)
	}
	for _, l := range rep.NoProvenance {
		fmt.Fprintf(w, "  no provenance %s/%d/%d\n", rep.VendorTopic, l.Partition, l.Offset)
	}
	for _, u := range rep.Unverified {
		fmt.Fprintf(w, "  unverifiable %s/%d/%d (src %s): %s\n", rep.VendorTopic, u.Partition, u.Offset, u.Src, u.Reason)
	}
	for _, c := range rep.CryptoShredded {
		from := c.EpochFrom
		if from == "" {
			from = "the beginning"
		}
		fmt.Fprintf(w, "  crypto-shredded %s/%d/[%d, %d]: %d records under retired key %s (epoch %s to %s)\n", rep.VendorTopic, c.Partition, c.FirstOffset, c.LastOffset, c.Records, c.KeyID, from, c.EpochUntil)
	}
	fmt.Fprintf(w, "  report: %s, %s\n", filepath.Join(dir, "report.json"), filepath.Join(dir, "report.html"))
}
