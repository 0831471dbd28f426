package policydiff

import (
	"fmt"
	"strings"
)

// NoticeInput is what a vendor change notice needs about one route.
type NoticeInput struct {
	Route      string
	Vendor     string // the recipient's name (the new config's, else the old one's)
	Purpose    string
	OldVersion string // policy version ids; empty when the route is new or removed
	NewVersion string
	Changes    []Change // every change; only this route's vendor-facing ones are used
	Ack        string   // the operator's acknowledgement, if given
}

// Notice renders the text an operator sends the vendor about a policy
// change: only changes that alter what the vendor receives (not the gate's
// internal settings), material ones first. It returns "" when the vendor
// sees no change. It names fields, actions and key ids, never key material
// or record values.
func Notice(in NoticeInput) string {
	var material, other []Change
	for _, c := range in.Changes {
		if c.Route != in.Route || c.Audience != Vendor {
			continue
		}
		if c.Material {
			material = append(material, c)
		} else {
			other = append(other, c)
		}
	}
	if len(material)+len(other) == 0 {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "To: %s\n", in.Vendor)
	fmt.Fprintf(&b, "Subject: change to the data you receive from us (route %s)\n\n", in.Route)
	fmt.Fprintf(&b, "We are changing the de-identification policy that governs the telemetry we share with you")
	if in.Purpose != "" {
		fmt.Fprintf(&b, " for %s", in.Purpose)
	}
	b.WriteString(".\n")
	switch {
	case in.OldVersion != "" && in.NewVersion != "":
		fmt.Fprintf(&b, "Records produced under the new policy carry the header deident-policy: %s (previously %s).\n", in.NewVersion, in.OldVersion)
	case in.NewVersion != "":
		fmt.Fprintf(&b, "Records carry the header deident-policy: %s.\n", in.NewVersion)
	case in.OldVersion != "":
		fmt.Fprintf(&b, "The route is discontinued; the last policy version was %s.\n", in.OldVersion)
	}
	section := func(title string, cs []Change) {
		if len(cs) == 0 {
			return
		}
		fmt.Fprintf(&b, "\n%s:\n", title)
		for _, c := range cs {
			fmt.Fprintf(&b, "  - %s\n", plain(c))
		}
	}
	section("Changes that give you more data or less protected data, or change pseudonyms (material)", material)
	section("Other changes", other)
	if in.Ack != "" {
		fmt.Fprintf(&b, "\nReason for the change: %s\n", in.Ack)
	}
	b.WriteString("\nPlease confirm that your use of the data remains within the agreed purpose.\n")
	return b.String()
}

// plain phrases a change for the notice.
func plain(c Change) string {
	key := strings.TrimPrefix(c.Key, "vendors."+c.Route)
	key = strings.TrimPrefix(key, ".")
	if key == "" {
		key = "route"
	}
	var s string
	switch {
	case c.Old == "":
		s = fmt.Sprintf("%s: now %s", key, c.New)
	case c.New == "":
		s = fmt.Sprintf("%s: no longer %s", key, c.Old)
	default:
		s = fmt.Sprintf("%s: was %s, now %s", key, c.Old, c.New)
	}
	if c.Why != "" {
		s += " (" + c.Why + ")"
	}
	return s
}
