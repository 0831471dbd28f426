// Package reliability holds the fault-injection suite of issue 8: Go tests
// behind the build tag "faults" that run the real deident binary as separate
// processes against a real Kafka broker (scripts/kafka-local) and inject
// faults: a broker outage, a replica killed with SIGKILL, a vendor topic
// that rejects writes, poison records, a refused material policy change and
// a slow vendor topic under a memory cap.
//
// Run it with scripts/faults, or:
//
//	go test -tags faults ./reliability/ -count=1 -v -timeout 20m
//
// Without the tag this package is empty, so `go test ./...` is unaffected.
// Each scenario starts its own broker on DEIDENT_FAULTS_PORT (default 19892)
// with its state under the test's temporary directory, and stops it at the
// end; scenarios run one after another.
package reliability
