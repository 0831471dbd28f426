package gen

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"time"
)

// AppendWorkflowAvroJSON appends the next workflow event in the JSON form
// of configs/avro/workflow.avsc (see internal/avrocodec for the mapping):
// the same event Append writes for Kind Workflow, with the time as epoch
// milliseconds (timestamp-millis), plus the fields only the Avro schema has,
// derived from the event so the same seed gives the same records:
// approver.ip (the approver's client address, from the user), labels (a
// map), paid_at (a nullable timestamp, set on paid steps),
// approver.email null on every seventh record and comment null on received
// steps (nullable unions). The generator's kind must be Workflow.
// Not safe for concurrent use.
func (g *Generator) AppendWorkflowAvroJSON(dst []byte) []byte {
	var m map[string]any
	d := json.NewDecoder(bytes.NewReader(g.Append(nil)))
	d.UseNumber()
	if err := d.Decode(&m); err != nil {
		panic("gen: workflow event is not JSON: " + err.Error()) // our own bytes
	}
	t, err := time.Parse(time.RFC3339Nano, m["time"].(string))
	if err != nil {
		panic("gen: workflow time: " + err.Error())
	}
	m["time"] = t.UnixMilli()
	step := m["step"].(string)
	if step == "received" {
		m["comment"] = nil
	}
	approver := m["approver"].(map[string]any)
	if g.n%7 == 0 {
		approver["email"] = nil
	}
	uid := 0
	if name := approver["name"].(string); strings.Contains(name, ".") {
		uid, _ = strconv.Atoi(name[strings.LastIndexByte(name, '.')+1:])
	}
	approver["ip"] = string(appendIP(nil, 10, 20+uid>>16&15, uid>>8&255, uid&255))
	m["labels"] = map[string]any{
		"cost_center": "cc-" + strconv.Itoa(g.n%40),
		"region":      regions[g.n%len(regions)],
	}
	m["paid_at"] = nil
	if step == "paid" {
		m["paid_at"] = t.Add(48 * time.Hour).UnixMilli()
	}
	out, err := json.Marshal(m)
	if err != nil {
		panic("gen: " + err.Error())
	}
	return append(dst, out...)
}

var regions = []string{"emea", "amer", "apac"}
