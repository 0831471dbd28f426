package route

import (
	"fmt"
	"net/netip"
	"testing"
)

// FuzzIPTruncateMatchesNetip checks the dotted-quad fast path against
// netip for every input and prefix length.
func FuzzIPTruncateMatchesNetip(f *testing.F) {
	for _, s := range []string{"10.1.2.3", "0.0.0.0", "255.255.255.255", "01.2.3.4", "1.2.3", "1.2.3.4.5", "256.1.1.1", "1..2.3", "::ffff:1.2.3.4", "1.2.3.4%eth0", "1.2.3.", ".1.2.3"} {
		f.Add(s, uint8(24))
	}
	f.Fuzz(func(t *testing.T, s string, bits uint8) {
		l := &leaf{v4: int(bits % 33), v6: 64}
		got, gotErr := ipTruncate(nil, l, []byte(s))
		// The netip path alone.
		var want []byte
		var wantErr error
		if ip, err := parseIP([]byte(s)); err != nil {
			wantErr = err
		} else {
			ip = ip.Unmap()
			b := l.v6
			if ip.Is4() {
				b = l.v4
			}
			p, err := ip.Prefix(b)
			if err != nil {
				wantErr = ErrNotIP
			} else {
				want = append(p.Addr().AppendTo([]byte{'"'}), '"')
			}
		}
		if string(got) != string(want) || gotErr != wantErr {
			t.Fatalf("%q /%d: got %q %v, want %q %v", s, l.v4, got, gotErr, want, wantErr)
		}
		_ = netip.Addr{}
	})
}

// FuzzApplyRemembersNothingWrong checks that what an Applier remembers
// from one record (the shapes of its objects) never changes the output or
// the error for the next: b through a used Applier equals b through a new one.
func FuzzApplyRemembersNothingWrong(f *testing.F) {
	f.Add([]byte(`{"a":{"b":"x","zz":1},"u":"v","ip":"10.0.0.1"}`), []byte(`{"a":{"b":"y","zy":1},"u":"w","ip":"10.0.0.2"}`))
	f.Add([]byte(`{"a":{"b":"x"},"long_member_name_here":1}`), []byte(`{"a":{"b\u0022":"x"},"long_member_name_herf":1}`))
	f.Add([]byte(`{"u":1,"a":{}}`), []byte(`{"u":1 ,"a":{"b":[]}}`))
	f.Fuzz(func(t *testing.T, a, b []byte) {
		r := compile(t, ""+
			"      - {path: a.b, action: pseudonymize}\n"+
			"      - {path: \"c[]\", action: keep}\n"+
			"      - {path: ip, action: ip_truncate}\n"+
			"      - {path: a.long_member_name_here, action: keep}\n"+
			"      - {path: u, action: keep}\n")
		used := r.NewApplier()
		used.Apply(nil, a)
		got, gotErr := used.Apply(nil, b)
		want, wantErr := r.NewApplier().Apply(nil, b)
		if string(got) != string(want) || fmt.Sprint(gotErr) != fmt.Sprint(wantErr) {
			t.Fatalf("%q after %q: got %q %v, want %q %v", b, a, got, gotErr, want, wantErr)
		}
	})
}
