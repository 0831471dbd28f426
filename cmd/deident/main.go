// Command deident de-identifies telemetry for vendors: see README.md.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

// exitError carries a process exit code through cobra.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "deident",
		Short:         "De-identify telemetry before it is shared with vendors",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(applyCmd(), checkCmd(), genCmd(), runCmd(), demoCmd(), policyCmd(), replayCmd(), auditCmd(), testCmd(), keysCmd())
	return root
}

func main() {
	if err := newRoot().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "deident:", err)
		var ee *exitError
		if errors.As(err, &ee) {
			os.Exit(ee.code)
		}
		os.Exit(1)
	}
}
