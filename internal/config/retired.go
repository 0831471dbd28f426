package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/deident/deident/internal/secret"
)

// RetiredKeysFile is the marker `deident keys retire` writes in the
// directory of the key files it removes (for env keys, the config's
// directory). Load accepts a key entry whose file (or variable) is gone when
// the marker there lists it: the epoch stays in the route's key ring under
// its recorded key id, without key material, and records in it are rejected
// ("key epoch retired").
const RetiredKeysFile = "retired-keys.json"

// RetiredKey is one retired epoch. It holds ids and times, never key material.
type RetiredKey struct {
	// Route is the vendor route the key belonged to (for people; matching
	// uses File or Env and ValidFrom).
	Route string `json:"route"`
	// File is the key file's name, in the marker's directory; Env the
	// variable that held the key. Exactly one is set.
	File string `json:"file,omitempty"`
	Env  string `json:"env,omitempty"`
	// KeyID is the key's id (secret.Key.ID), which output headers and audit name.
	KeyID string `json:"key_id"`
	// ValidFrom and ValidUntil bound the epoch, RFC 3339; ValidFrom empty
	// means from the beginning.
	ValidFrom  string `json:"valid_from,omitempty"`
	ValidUntil string `json:"valid_until"`
	// RetiredAt is when the key was retired, RFC 3339.
	RetiredAt string `json:"retired_at"`
}

// RetiredKeys is the content of a RetiredKeysFile.
type RetiredKeys struct {
	Retired []RetiredKey `json:"retired"`
}

// FormatTime formats an epoch bound for RetiredKey: RFC 3339 in UTC, "" for zero.
func FormatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// ReadRetiredKeys reads dir's marker; none is an empty list.
func ReadRetiredKeys(dir string) (*RetiredKeys, error) {
	b, err := os.ReadFile(filepath.Join(dir, RetiredKeysFile))
	if errors.Is(err, fs.ErrNotExist) {
		return &RetiredKeys{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", RetiredKeysFile, err)
	}
	var m RetiredKeys
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("reading %s in %s: %w", RetiredKeysFile, dir, err)
	}
	return &m, nil
}

// Add records e unless an entry for the same file or variable and epoch is there.
func (m *RetiredKeys) Add(e RetiredKey) {
	for _, x := range m.Retired {
		if x.File == e.File && x.Env == e.Env && x.ValidFrom == e.ValidFrom {
			return
		}
	}
	m.Retired = append(m.Retired, e)
}

// Write replaces dir's marker atomically.
func (m *RetiredKeys) Write(dir string) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".retired-keys-*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", RetiredKeysFile, err)
	}
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return fmt.Errorf("writing %s: %w", RetiredKeysFile, err)
	}
	if err := errors.Join(tmp.Sync(), tmp.Close()); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("writing %s: %w", RetiredKeysFile, err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, RetiredKeysFile)); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("writing %s: %w", RetiredKeysFile, err)
	}
	return nil
}

// lookup finds the entry for a key reference.
func (m *RetiredKeys) lookup(k KeyRef) (RetiredKey, bool) {
	from := FormatTime(k.ValidFrom)
	for _, e := range m.Retired {
		if e.ValidFrom != from {
			continue
		}
		if k.File != "" && e.File == filepath.Base(k.File) || k.Env != "" && e.Env == k.Env {
			return e, true
		}
	}
	return RetiredKey{}, false
}

// MarkerDir is the directory whose RetiredKeysFile covers k: the key file's
// directory, or for an env key the config's (dir).
func (k KeyRef) MarkerDir(dir string) string {
	if k.File == "" {
		return dir
	}
	path := k.File
	if !filepath.IsAbs(path) {
		path = filepath.Join(dir, path)
	}
	return filepath.Dir(path)
}

// gone reports whether the key's file does not exist or its variable is
// unset: the only states a retired key may be in.
func (k KeyRef) gone(dir string) bool {
	switch {
	case k.File != "" && k.Env == "":
		path := k.File
		if !filepath.IsAbs(path) {
			path = filepath.Join(dir, path)
		}
		_, err := os.Stat(path)
		return errors.Is(err, fs.ErrNotExist)
	case k.Env != "" && k.File == "":
		v, ok := os.LookupEnv(k.Env)
		return !ok || v == ""
	}
	return false
}

// retired resolves a key that is gone against its marker: ok when the
// marker lists it, with the key standing in for the destroyed material.
func (k KeyRef) retired(dir string) (secret.Key, bool, error) {
	if !k.gone(dir) {
		return secret.Key{}, false, nil
	}
	m, err := ReadRetiredKeys(k.MarkerDir(dir))
	if err != nil {
		return secret.Key{}, false, err
	}
	e, ok := m.lookup(k)
	if !ok || e.KeyID == "" {
		return secret.Key{}, false, nil
	}
	return secret.Retired(e.KeyID), true, nil
}

// RetiredKeys returns the route's retired epochs, by key id: the key
// entries Load found retired, and every entry for the route in the markers
// of the route's key directories (an entry later deleted from the config is
// still known). Marker read errors are returned.
func (c *Config) RetiredKeys(route string) (map[string]RetiredKey, error) {
	out := map[string]RetiredKey{}
	r, ok := c.Vendors[route]
	if !ok {
		return out, nil
	}
	dirs := map[string]bool{}
	for i, k := range r.Keys {
		dirs[k.MarkerDir(c.Dir)] = true
		if k.Retired {
			e := RetiredKey{Route: route, Env: k.Env, KeyID: k.Key.ID(), ValidFrom: FormatTime(k.ValidFrom)}
			if k.File != "" {
				e.File = filepath.Base(k.File)
			}
			if i+1 < len(r.Keys) {
				e.ValidUntil = FormatTime(r.Keys[i+1].ValidFrom)
			}
			out[e.KeyID] = e
		}
	}
	for _, d := range sortedKeys(dirs) {
		m, err := ReadRetiredKeys(d)
		if err != nil {
			return nil, err
		}
		for _, e := range m.Retired {
			if e.Route == route {
				if _, dup := out[e.KeyID]; !dup {
					out[e.KeyID] = e
				}
			}
		}
	}
	return out, nil
}
