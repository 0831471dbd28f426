package main

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/deident/deident/internal/policytest"
)

func testCmd() *cobra.Command {
	var runPattern string
	var verbose bool
	cmd := &cobra.Command{
		Use:   "test DIR|FILE...",
		Short: "Run the policy's test cases (*.test.yaml): expected outputs and built-in privacy assertions",
		Long: `Run the test cases kept beside a policy, the way a team checks a policy change in
its own CI. Each *.test.yaml file (found recursively in DIR) names a config
(relative to the test file), a route, and cases: input records (inline, or a
JSON-lines input_file) with assertions.

  config: ../deident.yaml
  route: acme-mdr
  env: {DEIDENT_KEY_FLOWAI: {file: ../demo-keys/flowai.key}}
  cases:
    - name: a login is pseudonymized
      input: [{time: "2026-11-01T00:00:01Z", actor: {user: {name: Alice}}}]
      expect: [{time: "2026-11-01T00:00:01Z", actor: {user: {name: usr_...}}}]

Besides expect (printed as a field-by-field diff when it fails) and
expect_reject (every record rejected with an error containing the text), these
assertions run on every case unless switched off under checks:
  allowlist        no output field outside the route's rules
  raw_identifiers  no e-mail, IPv4, IPv6 or card number, nor a raw value of a
                   direct-identifier field, anywhere outside the IP fields
  determinism      the same input again (warm cache; fresh applier, reverse
                   order) gives the same bytes and key id
  isolation        the route's rules under another route's keys give other
                   pseudonyms (every other pseudonymizing route, or
                   different_from_route: NAME)
  min_k            with k_anonymity (or min_k: N), every released class and
                   aggregate over the fixture holds at least k distinct
                   entities, counted independently of the stage
Exits 1 when any case fails.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var filter *regexp.Regexp
			if runPattern != "" {
				var err error
				if filter, err = regexp.Compile(runPattern); err != nil {
					return fmt.Errorf("--run: %w", err)
				}
			}
			files, err := testFiles(args)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			passed, failed := 0, 0
			for _, path := range files {
				f, err := policytest.Load(path)
				if err != nil {
					fmt.Fprintf(w, "FAIL %s\n    %s\n", path, indent(err.Error()))
					failed++
					continue
				}
				if filter != nil {
					cases := f.Cases[:0]
					for _, c := range f.Cases {
						if filter.MatchString(c.Name) {
							cases = append(cases, c)
						}
					}
					if f.Cases = cases; len(cases) == 0 {
						continue
					}
				}
				for _, r := range policytest.RunFile(f) {
					printResult(w, &r, verbose)
					if r.Passed() {
						passed++
					} else {
						failed++
					}
				}
			}
			fmt.Fprintf(w, "%d passed, %d failed\n", passed, failed)
			if failed > 0 {
				return &exitError{code: 1, err: fmt.Errorf("%d passed, %d failed", passed, failed)}
			}
			if passed == 0 {
				return &exitError{code: 1, err: fmt.Errorf("no test cases ran")}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&runPattern, "run", "", "run only the cases whose name matches this regular expression")
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "print what each case checked")
	return cmd
}

// testFiles expands the arguments: a directory to its *.test.yaml and
// *.test.yml files, recursively, in name order; a file as it is.
func testFiles(args []string) ([]string, error) {
	var files []string
	for _, a := range args {
		st, err := os.Stat(a)
		if err != nil {
			return nil, err
		}
		if !st.IsDir() {
			files = append(files, a)
			continue
		}
		var found []string
		err = filepath.WalkDir(a, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if !d.IsDir() && (strings.HasSuffix(p, ".test.yaml") || strings.HasSuffix(p, ".test.yml")) {
				found = append(found, p)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		if len(found) == 0 {
			return nil, fmt.Errorf("no *.test.yaml files in %s", a)
		}
		sort.Strings(found)
		files = append(files, found...)
	}
	return files, nil
}

func printResult(w io.Writer, r *policytest.Result, verbose bool) {
	status := "ok  "
	if !r.Passed() {
		status = "FAIL"
	}
	fmt.Fprintf(w, "%s %s:%d  %s\n", status, r.File, r.Line, r.Case)
	for _, f := range r.Failures {
		fmt.Fprintf(w, "    %s\n", indent(f))
	}
	if verbose || !r.Passed() {
		for _, n := range r.Notes {
			fmt.Fprintf(w, "    (%s)\n", n)
		}
	}
}

func indent(s string) string { return strings.ReplaceAll(s, "\n", "\n    ") }
