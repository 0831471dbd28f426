// Package configs carries the presets that classify common OCSF and ECS
// fields, embedded so the CLI can use them anywhere.
package configs

import (
	"embed"
	"fmt"
	"os"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

//go:embed presets/*.yaml
var presets embed.FS

// Classes a preset may give a field, from most to least sensitive.
var Classes = []string{"secret", "direct_identifier", "content", "network_address", "quasi_identifier", "operational"}

// FieldClass is one field's classification.
type FieldClass struct {
	Class   string `yaml:"class"`
	Suggest string `yaml:"suggest"`
}

// Preset classifies fields of one schema by path.
type Preset struct {
	Name   string                `yaml:"name"`
	Fields map[string]FieldClass `yaml:"fields"`
}

// LoadPreset returns the embedded preset name ("ocsf", "ecs") or reads a
// preset file at that path.
func LoadPreset(name string) (*Preset, error) {
	data, err := presets.ReadFile("presets/" + name + ".yaml")
	if err != nil {
		if data, err = os.ReadFile(name); err != nil {
			return nil, fmt.Errorf("preset %q: not built in (ocsf, ecs) and not a readable file", name)
		}
	}
	var p Preset
	if err := yaml.Unmarshal(data, &p); err != nil {
		return nil, fmt.Errorf("preset %q: %w", name, err)
	}
	for path, c := range p.Fields {
		if !slices.Contains(Classes, c.Class) {
			return nil, fmt.Errorf("preset %q: field %s: unknown class %q (want one of %s)", name, path, c.Class, strings.Join(Classes, ", "))
		}
	}
	return &p, nil
}

// Sensitive reports whether a class must not leave unprotected.
func Sensitive(class string) bool {
	return class == "secret" || class == "direct_identifier" || class == "content" || class == "network_address"
}
