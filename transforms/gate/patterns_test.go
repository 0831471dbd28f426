package gate

import (
	"regexp"
	"strings"
	"testing"
)

func TestPatterns(t *testing.T) {
	all := patternSet(1<<numPatterns - 1)
	cases := []struct {
		name string
		in   string
		want []pattern
	}{
		{"plain text", "scheduled scan completed at 12:30:45", nil},
		{"email", "mail Bob.Jones+x@Example.co.uk now", []pattern{patEmail}},
		{"email url-encoded", "/q?u=bob%40example.com&x=1", []pattern{patEmail}},
		{"email upper case", "BOB@EXAMPLE.COM", []pattern{patEmail}},
		{"at without domain", "ping @channel and foo@bar", nil},
		{"at with numeric tld", "v@1.2", nil},
		{"ipv4", "from 192.168.1.20:443", []pattern{patIPv4}},
		{"ipv4 in url", "http://10.0.0.1/x", []pattern{patIPv4}},
		{"ipv4 octet over 255", "1.2.3.256", nil},
		{"dotted version, five parts", "build 1.0.9.8.4", nil},
		{"browser version", "Firefox/1.2.3.4", nil},
		{"gecko rv", "rv:1.8.0.3", nil},
		{"chrome version", "Chrome/65.0.3325.181", nil},
		{"ipv6 compressed", "addr fe80::1ff:fe23:4567:890a.", []pattern{patIPv6}},
		{"ipv6 full", "2001:0db8:85a3:0000:0000:8a2e:0370:7334", []pattern{patIPv6}},
		{"ipv6 bracketed with port", "[2001:db8::42]:8443", []pattern{patIPv6}},
		{"ipv6 loopback ignored", "::1", nil},
		{"c++ scope", "std::vector and Foo::Bar", nil},
		{"time", "12:34:56", nil},
		{"mac colons", "mac 00:1A:2b:3c:4d:5e up", []pattern{patMAC}},
		{"mac dashes", "00-1a-2b-3c-4d-5e", []pattern{patMAC}},
		{"mac cisco", "001a.2b3c.4d5e", []pattern{patMAC}},
		{"mac seven groups", "00:1a:2b:3c:4d:5e:6f", nil},
		{"dotted digits not a mac", "1234.5678.9012", nil},
		{"uuid not a mac", "550e8400-e29b-41d4-a716-446655440000", nil},
		{"card", "4111111111111111", []pattern{patCard}},
		{"card spaces", "card 4111 1111 1111 1111 exp", []pattern{patCard}},
		{"card dashes", "5555-5555-5555-4444", []pattern{patCard}},
		{"amex 15 digits", "378282246310005", []pattern{patCard}},
		{"15 digits failing luhn", "378282246310006", nil},
		{"card after other numbers", "ref 99 4111 1111 1111 1111", []pattern{patCard}},
		{"epoch millis", "1730419200000", nil},
		{"20 digits", "41111111111111111111", nil},
		{"card inside a word", "x4111111111111111", nil},
		{"iban", "IBAN DE89370400440532013000 please", []pattern{patIBAN}},
		{"iban grouped", "GB82 WEST 1234 5698 7654 32", []pattern{patIBAN}},
		{"iban lower case", "de89370400440532013000", []pattern{patIBAN}},
		{"iban wrong checksum", "DE89370400440532013001", nil},
		{"iban wrong length for country", "DE8937040044053201300", nil},
		{"ssn", "ssn 078-05-1120.", []pattern{patSSN}},
		{"ssn spaces", "078 05 1120", []pattern{patSSN}},
		{"ssn invalid area", "666-05-1120 and 900-12-3456", nil},
		{"ssn in a phone number", "555-123-4567", nil},
		{"date", "2026-11-01", nil},
		{"jwt", "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.dBjftJeZ4CVPmB92K27uhbUJU1p1r_wW1gFWFOEjXk", []pattern{patJWT}},
		{"jwt unsigned", "t=eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", []pattern{patJWT}},
		{"eyJ alone", "eyJhbGciOiJIUzI1NiJ9", nil},
		{"aws key", "export AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE", []pattern{patCloudKey}},
		{"aws key lower case is not one", "akiaiosfodnn7example", nil},
		{"gcp key", "key=AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe", []pattern{patCloudKey}},
		{"github token", "ghp_" + strings.Repeat("a1B2", 9), []pattern{patCloudKey}},
		{"private key", "-----BEGIN RSA PRIVATE KEY-----\nMIIE...", []pattern{patPrivateKey}},
		{"public key", "-----BEGIN PUBLIC KEY-----", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var want patternSet
			for _, p := range tc.want {
				want |= 1 << p
			}
			if got := scanPatterns([]byte(tc.in), all); got != want {
				t.Errorf("scanPatterns(%q) = %s, want %s", tc.in, setString(got), setString(want))
			}
		})
	}
}

func setString(s patternSet) string {
	var names []string
	for p := range numPatterns {
		if s.has(p) {
			names = append(names, (ReasonPattern + Reason(p)).String())
		}
	}
	return "[" + strings.Join(names, " ") + "]"
}

func TestLuhnAndMod97(t *testing.T) {
	digits := func(s string) []byte {
		b := []byte(s)
		for i := range b {
			b[i] -= '0'
		}
		return b
	}
	for s, ok := range map[string]bool{"4111111111111111": true, "4111111111111112": false, "79927398713": true} {
		if luhn(digits(s)) != ok {
			t.Errorf("luhn(%s) != %v", s, ok)
		}
	}
	if mod97([]byte("GB82WEST12345698765432")) != 1 || mod97([]byte("GB83WEST12345698765432")) == 1 {
		t.Error("mod97")
	}
}

func FuzzScanPatterns(f *testing.F) {
	for _, s := range []string{"4111 1111 1111 1111", "fe80::1", "DE89370400440532013000", "a@b.cd", "eyJa.eyJb.", "00:1a:2b:3c:4d:5e", "-----BEGIN"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		scanPatterns([]byte(s), 1<<numPatterns-1)
	})
}

// TestIsTimestamp compares the timestamp test with a regular expression
// on timestamps with one byte changed to every value.
func TestIsTimestamp(t *testing.T) {
	re := regexp.MustCompile(`^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2})?$`)
	for _, base := range []string{"2026-11-01T00:00:01", "2026-11-01T00:00:01.054Z", "1999-12-31 23:59:59.123456789+01:00", "2026-11-01t00:00:01-05:30", "2026-11-01T00:00:01.1z"} {
		for i := range len(base) + 1 {
			for c := range 256 {
				b := []byte(base)
				if i < len(b) {
					b[i] = byte(c)
				} else {
					b = append(b, byte(c))
				}
				if got, want := isTimestamp(b), re.Match(b); got != want {
					t.Fatalf("isTimestamp(%q) = %v, want %v", b, got, want)
				}
			}
		}
	}
}
