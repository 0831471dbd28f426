package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/deident/deident/internal/config"
	"github.com/deident/deident/internal/policydiff"
	"github.com/deident/deident/transforms/route"
)

// exitMaterial is policy diff's exit code for unacknowledged material changes.
const exitMaterial = 1

func policyCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Review policy changes",
	}
	cmd.AddCommand(policyDiffCmd())
	return cmd
}

func policyDiffCmd() *cobra.Command {
	var ack string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "diff OLD NEW",
		Short: "List the changes between two configs, mark the material ones and print the vendor notices",
		Long: `Compare two config files route by route: fields added or removed, actions and
their options, k-anonymity, categories, purpose, vendor, topic, keys (by key id),
gate settings and opt-ins. A change is material (marked "!") when it exports a
field newly, weakens a field's action (drop > pseudonymize, email_split with the
domain pseudonymized > email_split > ip_prefix_preserving > ip_truncate,
generalize > keep; fewer pseudonym bits, more IP bits, finer buckets), lowers
or removes k-anonymity, adds a route, vendor, purpose, category or opt-in,
changes a key, or loosens the gate. Both configs are loaded in full, keys
included, so keys compare by id.

Prints, per route with vendor-facing changes, the change notice to send the
vendor. Exits 1 on material changes unless --ack gives the reason, or NEW
acknowledges them per route at the new policy version:

  acknowledge:
    - {route: acme-mdr, policy: p0123456789abcdef, reason: "file paths needed for detections"}

The same acknowledgement lets a running worker reload a materially weaker
config (see deident run and check --against).`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			oldCfg, oldRoutes, err1 := loadForDiff("old", args[0])
			newCfg, newRoutes, err2 := loadForDiff("new", args[1])
			if err := errors.Join(err1, err2); err != nil {
				return err
			}
			changes := policydiff.Diff(oldCfg, newCfg)
			out := cmd.OutOrStdout()
			if asJSON {
				if err := writeDiffJSON(out, changes, oldRoutes, newRoutes, ack); err != nil {
					return err
				}
			} else {
				writeDiff(out, changes, oldCfg, newCfg, oldRoutes, newRoutes, ack)
			}
			versions := map[string]string{}
			for name, r := range newRoutes {
				versions[name] = r.Version
			}
			if n := len(policydiff.Unacknowledged(changes, newCfg, versions, strings.TrimSpace(ack))); n > 0 {
				return &exitError{code: exitMaterial, err: fmt.Errorf("%d material change(s) not acknowledged; review them and rerun with --ack \"reason\", or acknowledge them in NEW (acknowledge: [{route, policy, reason}])", n)}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&ack, "ack", "", "acknowledge the material changes, with the reason (it goes into the notices)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the changes as JSON")
	return cmd
}

func loadForDiff(which, path string) (*config.Config, map[string]*route.Route, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return nil, nil, fmt.Errorf("%s config %s: %w", which, path, err)
	}
	routes, err := route.CompileAll(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("%s config %s: %w", which, path, err)
	}
	return cfg, routes, nil
}

func routeVersion(rs map[string]*route.Route, name string) string {
	if r := rs[name]; r != nil {
		return r.Version
	}
	return ""
}

func writeDiff(w io.Writer, changes []policydiff.Change, oldCfg, newCfg *config.Config, oldRoutes, newRoutes map[string]*route.Route, ack string) {
	if len(changes) == 0 {
		fmt.Fprintln(w, "no changes")
		return
	}
	byRoute := map[string][]policydiff.Change{}
	for _, c := range changes {
		byRoute[c.Route] = append(byRoute[c.Route], c)
	}
	names := slices.Sorted(maps.Keys(byRoute))
	material := 0
	for _, name := range names {
		cs := byRoute[name]
		if name == "" {
			fmt.Fprintln(w, "sources")
		} else {
			fmt.Fprintf(w, "route %s (policy %s -> %s)\n", name, orDash(routeVersion(oldRoutes, name)), orDash(routeVersion(newRoutes, name)))
		}
		for _, c := range cs {
			if c.Material {
				material++
			}
			aud := ""
			if c.Audience == policydiff.Internal {
				aud = "  (internal)"
			}
			fmt.Fprintf(w, "  %s%s\n", c, aud)
		}
	}
	fmt.Fprintf(w, "\n%d change(s), %d material\n", len(changes), material)
	for _, name := range names {
		if name == "" {
			continue
		}
		in := policydiff.NoticeInput{
			Route:      name,
			OldVersion: routeVersion(oldRoutes, name),
			NewVersion: routeVersion(newRoutes, name),
			Changes:    changes,
			Ack:        ack,
		}
		if in.Ack == "" {
			in.Ack = newCfg.Acked(name, in.NewVersion)
		}
		rc, ok := newCfg.Vendors[name]
		if !ok {
			rc = oldCfg.Vendors[name]
		}
		in.Vendor, in.Purpose = rc.Vendor, rc.Purpose
		if text := policydiff.Notice(in); text != "" {
			fmt.Fprintf(w, "\n----- change notice for %s -----\n%s", name, text)
		}
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func writeDiffJSON(w io.Writer, changes []policydiff.Change, oldRoutes, newRoutes map[string]*route.Route, ack string) error {
	versions := map[string][2]string{}
	for _, c := range changes {
		if c.Route != "" {
			versions[c.Route] = [2]string{routeVersion(oldRoutes, c.Route), routeVersion(newRoutes, c.Route)}
		}
	}
	if changes == nil {
		changes = []policydiff.Change{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(struct {
		Changes  []policydiff.Change  `json:"changes"`
		Versions map[string][2]string `json:"versions"`
		Material bool                 `json:"material"`
		Ack      string               `json:"ack,omitempty"`
	}{changes, versions, policydiff.Material(changes), ack})
}
