package config

import (
	"os"
	"testing"
)

// TestMain unsets DEIDENT_KAFKA_BROKERS: the README's way to run the tests
// against a real broker sets it, and the golden configs with a clusters
// section must refuse kafka.brokers, which that variable overrides. The
// override itself is tested with t.Setenv.
func TestMain(m *testing.M) {
	os.Unsetenv("DEIDENT_KAFKA_BROKERS")
	os.Exit(m.Run())
}
