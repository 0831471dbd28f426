package audit

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/deident/deident/internal/config"
)

// Source is one source topic a route receives.
type Source struct {
	Name     string
	Topic    string
	Category config.Category
}

// RouteSources lists the sources (with a topic) whose category the route
// allows, by name. Non-JSON sources are an error: only JSON is re-derived.
func RouteSources(cfg *config.Config, routeName string) ([]Source, error) {
	rc := cfg.Vendors[routeName]
	var out []Source
	for _, name := range slices.Sorted(maps.Keys(cfg.Sources)) {
		s := cfg.Sources[name]
		if s.Topic == "" || !slices.Contains(rc.Categories, s.Category) {
			continue
		}
		if s.Format != config.JSON {
			return nil, fmt.Errorf("sources.%s.format: %s is not supported yet (json only)", name, s.Format)
		}
		out = append(out, Source{Name: name, Topic: s.Topic, Category: s.Category})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("vendors.%s.categories: no source topic has a category the route allows", routeName)
	}
	return out, nil
}

// Output is one record a replay produced.
type Output struct {
	// Src is the source record's deident-src ("topic/partition/offset").
	Src string `json:"src"`
	// Policy is the policy version id; KeyID the key's id.
	Policy string `json:"policy"`
	KeyID  string `json:"key"`
	// Key is the source record's Kafka key (the worker keys outputs by it).
	Key []byte `json:"-"`
	// Value is the route's output.
	Value []byte `json:"-"`
	// Time is the source record's timestamp.
	Time time.Time `json:"-"`
}

// Counts are what a replay did, per route: in = out + quarantined + failed.
type Counts struct {
	In          int            `json:"in"`
	Out         int            `json:"out"`
	Quarantined int            `json:"quarantined"`
	Failed      int            `json:"failed"`
	ByReason    map[string]int `json:"quarantined_by_reason,omitempty"`
	Ranges      []Range        `json:"ranges"`
}

// Replay reads every source topic of the policy's route over [from, to),
// applies the route and its gate record by record (partitions in order) and
// calls emit for every output that passes the gate. Records the gate fails
// and records the route cannot de-identify are only counted.
func Replay(ctx context.Context, cfg *config.Config, p *Policy, client *kafka.Client, rd Reader, from, to Bound, emit func(Output) error) (Counts, error) {
	c := Counts{ByReason: map[string]int{}}
	sources, err := RouteSources(cfg, p.Route.Name)
	if err != nil {
		return c, err
	}
	for _, s := range sources {
		ranges, err := Resolve(ctx, client, s.Topic, from, to)
		if err != nil {
			return c, err
		}
		c.Ranges = append(c.Ranges, ranges...)
		for _, r := range ranges {
			err := rd.Read(ctx, r, func(m kafka.Message) error {
				c.In++
				d := p.Derive(m.Value)
				switch {
				case d.Err != nil:
					c.Failed++
					return nil
				case !d.Verdict.Pass:
					c.Quarantined++
					for _, reason := range strings.Split(d.Verdict.Reasons, ",") {
						c.ByReason[reason]++
					}
					return nil
				}
				c.Out++
				return emit(Output{
					Src:    Src(r.Topic, r.Partition, m.Offset),
					Policy: p.Route.Version,
					KeyID:  d.KeyID,
					Key:    m.Key,
					Value:  d.Out,
					Time:   m.Time,
				})
			})
			if err != nil {
				return c, err
			}
		}
	}
	return c, nil
}
