package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/deident/deident/internal/config"
)

func keysCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "keys",
		Short: "Manage the routes' key epochs",
	}
	cmd.AddCommand(keysRetireCmd())
	return cmd
}

// retirement is one key epoch keys retire removes.
type retirement struct {
	route string
	ref   config.KeyRef
	until time.Time
	path  string // the key file; "" for an env key
}

func keysRetireCmd() *cobra.Command {
	var cfgPath, beforeS string
	var yes, dryRun bool
	cmd := &cobra.Command{
		Use:   "retire --config FILE --before DATE [--yes] [--dry-run]",
		Short: "Crypto-shred key epochs that ended before DATE by removing their key files",
		Long: `List, for every route, the key epochs whose validity ended before DATE (an epoch
ends where the next one starts; the newest never ends), ask for confirmation on
stdin unless --yes, record them in retired-keys.json in the key files' directory
(key ids, files and epoch bounds; never key material) and remove the key files.
Pseudonyms made under a removed key can then never be re-derived or linked:
the epoch is crypto-shredded. Copies of the keys elsewhere (backups, secret
stores) must be destroyed too.

Keys from the environment cannot be removed here: they are listed with "remove
the variable yourself" and recorded in retired-keys.json in the config's
directory, so the config still loads once the variable is gone.

Afterwards the config loads with the retired entries in place (their key ids
kept, so policy versions do not change); apply and run reject records of a
retired epoch ("key epoch retired"), and audit counts vendor records made under
a retired key as crypto-shredded instead of failing.

DATE is RFC 3339 or YYYY-MM-DD (midnight UTC). The config must load: every key
it names, env keys included, must be present.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			before, err := parseDate(beforeS)
			if err != nil {
				return fmt.Errorf("--before: %w", err)
			}
			cfg, err := config.Load(cfgPath)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			var todo []retirement
			for _, name := range sortedRoutes(cfg) {
				keys := cfg.Vendors[name].Keys // sorted by valid_from
				for i, k := range keys {
					if i+1 == len(keys) {
						break // the newest epoch never ends
					}
					until := keys[i+1].ValidFrom
					if until.After(before) {
						continue
					}
					where := "env " + k.Env
					r := retirement{route: name, ref: k, until: until}
					if k.File != "" {
						r.path = k.File
						if !filepath.IsAbs(r.path) {
							r.path = filepath.Join(cfg.Dir, r.path)
						}
						where = "file " + r.path
					}
					state := "to remove"
					switch {
					case k.Retired:
						state = "already retired"
					case k.File == "":
						state = "remove the variable yourself"
					}
					fmt.Fprintf(w, "%s: key %s (%s), epoch %s: %s\n", name, k.Key.ID(), where, epochText(k.ValidFrom, until), state)
					if !k.Retired {
						todo = append(todo, r)
					}
				}
			}
			if len(todo) == 0 {
				fmt.Fprintf(w, "no key epoch to retire: none ended before %s\n", before.Format(time.RFC3339))
				return nil
			}
			if dryRun {
				fmt.Fprintf(w, "dry run: nothing removed\n")
				return nil
			}
			if !yes {
				fmt.Fprintf(w, "Retire %d key epoch(s)? Pseudonyms made under these keys can never be re-derived. Type yes to go on: ", len(todo))
				ok, err := confirmed(cmd.InOrStdin())
				if err != nil {
					return err
				}
				if !ok {
					fmt.Fprintln(w)
					return errors.New("not confirmed; nothing removed")
				}
			}
			return retire(w, cfg, todo, time.Now())
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfgPath, "config", "", "config file (YAML)")
	f.StringVar(&beforeS, "before", "", "retire epochs that ended at or before this time (RFC 3339 or YYYY-MM-DD)")
	f.BoolVar(&yes, "yes", false, "do not ask for confirmation")
	f.BoolVar(&dryRun, "dry-run", false, "only list the epochs that would be retired")
	for _, name := range []string{"config", "before"} {
		_ = cmd.MarkFlagRequired(name)
	}
	return cmd
}

// retire records every epoch in its directory's marker, then removes the
// key files: a crash in between leaves a marker listing a key that is still
// there, which loads as an ordinary key, and running retire again finishes.
func retire(w io.Writer, cfg *config.Config, todo []retirement, now time.Time) error {
	markers := map[string]*config.RetiredKeys{}
	var dirs []string
	for _, r := range todo {
		dir := r.ref.MarkerDir(cfg.Dir)
		m := markers[dir]
		if m == nil {
			var err error
			if m, err = config.ReadRetiredKeys(dir); err != nil {
				return err
			}
			markers[dir] = m
			dirs = append(dirs, dir)
		}
		e := config.RetiredKey{
			Route: r.route, Env: r.ref.Env, KeyID: r.ref.Key.ID(),
			ValidFrom: config.FormatTime(r.ref.ValidFrom), ValidUntil: config.FormatTime(r.until),
			RetiredAt: now.UTC().Format(time.RFC3339),
		}
		if r.path != "" {
			e.File = filepath.Base(r.path)
		}
		m.Add(e)
	}
	for _, dir := range dirs {
		if err := markers[dir].Write(dir); err != nil {
			return err
		}
		fmt.Fprintf(w, "recorded in %s\n", filepath.Join(dir, config.RetiredKeysFile))
	}
	var errs []error
	for _, r := range todo {
		if r.path == "" {
			fmt.Fprintf(w, "%s: key %s: remove %s from the environment yourself\n", r.route, r.ref.Key.ID(), r.ref.Env)
			continue
		}
		if err := os.Remove(r.path); err != nil {
			errs = append(errs, fmt.Errorf("%s: key %s: %w", r.route, r.ref.Key.ID(), err))
			continue
		}
		fmt.Fprintf(w, "%s: key %s: removed %s\n", r.route, r.ref.Key.ID(), r.path)
	}
	return errors.Join(errs...)
}

func confirmed(in io.Reader) (bool, error) {
	line, err := bufio.NewReader(in).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return false, fmt.Errorf("reading confirmation: %w", err)
	}
	a := strings.ToLower(strings.TrimSpace(line))
	return a == "yes" || a == "y", nil
}

func parseDate(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	t, err := time.Parse("2006-01-02", s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is not RFC 3339 or YYYY-MM-DD", s)
	}
	return t, nil
}

func epochText(from, until time.Time) string {
	f := "the beginning"
	if !from.IsZero() {
		f = from.UTC().Format(time.RFC3339)
	}
	return "from " + f + " until " + until.UTC().Format(time.RFC3339)
}

func sortedRoutes(cfg *config.Config) []string { return slices.Sorted(maps.Keys(cfg.Vendors)) }
