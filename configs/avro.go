package configs

import _ "embed"

// WorkflowSchema is the Avro schema of workflow events (avro/workflow.avsc):
// what deident gen --kind workflow --format avro writes.
//
//go:embed avro/workflow.avsc
var WorkflowSchema string
