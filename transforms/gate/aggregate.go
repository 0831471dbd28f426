package gate

import (
	"bytes"
	"encoding/json"
)

// aggregateMembers are the members a k-anonymity aggregate may hold and
// whether each is a JSON object of per-field values (group, sum, min, max).
var aggregateMembers = map[string]string{
	"window_start": "string", "window_end": "string",
	"group": "object", "levels": "array", "count": "number", "entities": "number",
	"sum": "numbers", "min": "numbers", "max": "numbers",
	"late": "number", // a late-record count (no group)
}

// CheckAggregate checks an aggregate published by the route's k-anonymity
// stage ({"window_start","window_end","group":{path:value},"levels","count",
// "entities","sum","min","max"}, or a late count): the members and their
// types (schema), every group value as the route's field at that path
// would be checked (patterns and echo; the IP patterns are skipped for the
// route's IP fields, which publish network addresses by design), and k
// against the aggregate's distinct-entity count (distinct when >= 0, else
// its "entities" member; a late count carries none and is not k-checked).
// Aggregates are few (one per group per window), so this path parses with
// encoding/json rather than the scanner. The Verdict's Findings are valid
// until the next call.
func (c *Checker) CheckAggregate(out []byte, distinct int) Verdict {
	c.findings, c.reasons, c.k = c.findings[:0], 0, -1
	g := c.g
	if !g.on {
		return Verdict{}
	}
	if g.echo != nil {
		c.flush()
		c.version = g.echo.version.Load()
	}
	var members map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(out))
	if err := dec.Decode(&members); err != nil || dec.More() {
		c.fail(ReasonSchema, "(record)")
		return Verdict{Reasons: c.reasons, Findings: c.findings}
	}
	_, late := members["late"]
	for name, raw := range members {
		want, ok := aggregateMembers[name]
		if !ok {
			c.fail(ReasonSchema, "*")
			continue
		}
		if !jsonKind(raw, want) {
			c.fail(ReasonSchema, name)
			continue
		}
		if name == "group" {
			c.aggregateGroup(raw)
		}
		if name == "entities" {
			var n float64
			_ = json.Unmarshal(raw, &n)
			c.k = int64(n)
		}
	}
	if !late {
		k := int64(distinct)
		if distinct < 0 {
			k = c.k
		}
		c.checkK(k)
	}
	return Verdict{Reasons: c.reasons, Findings: c.findings}
}

// aggregateGroup checks the generalized quasi-identifier values of a group.
func (c *Checker) aggregateGroup(raw json.RawMessage) {
	var group map[string]any
	if json.Unmarshal(raw, &group) != nil {
		c.fail(ReasonSchema, "group")
		return
	}
	for path, v := range group {
		l, ok := c.g.byPath[path]
		if !ok {
			c.fail(ReasonSchema, "group.*") // not a field the route outputs
			continue
		}
		switch v := v.(type) {
		case string:
			c.text([]byte(v), path, l.kind != kindIPPrefix && l.kind != kindIPTruncate)
		case float64, nil:
		default:
			c.fail(ReasonSchema, path)
		}
	}
}

// jsonKind reports whether raw is a JSON value of the kind want names.
func jsonKind(raw json.RawMessage, want string) bool {
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return false
	}
	switch want {
	case "string":
		_, ok := v.(string)
		return ok
	case "number":
		_, ok := v.(float64)
		return ok
	case "array":
		a, ok := v.([]any)
		for _, e := range a {
			if _, num := e.(float64); !num {
				return false
			}
		}
		return ok
	case "object":
		_, ok := v.(map[string]any)
		return ok
	case "numbers":
		m, ok := v.(map[string]any)
		for _, e := range m {
			if _, num := e.(float64); !num {
				return false
			}
		}
		return ok
	}
	return false
}
