package gate

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"unsafe"

	"github.com/deident/deident/internal/config"
)

// pattern indexes config.GatePatterns; its reason is reasonPattern+pattern.
type pattern uint8

const (
	patEmail pattern = iota
	patIPv4
	patIPv6
	patMAC
	patCard
	patIBAN
	patSSN
	patJWT
	patCloudKey
	patPrivateKey
	numPatterns
)

// patternSet is a bit per pattern.
type patternSet uint16

func (s patternSet) has(p pattern) bool { return s&(1<<p) != 0 }

func patternsOf(names []config.GatePattern) patternSet {
	var s patternSet
	for _, n := range names {
		for i, p := range config.GatePatterns {
			if p == n {
				s |= 1 << i
			}
		}
	}
	return s
}

// Byte classes, one table lookup each on the hot path.
const (
	cDigit = 1 << iota
	cHexLetter
	cLetter
	cUpper
	cLocal    // e-mail local part: letters, digits, ._%+-
	cDomain   // e-mail domain: letters, digits, .-
	cB64URL   // base64url: letters, digits, _-
	cHexLower // lower-case hex: digits, a-f
)

var class = func() (t [256]uint8) {
	for c := '0'; c <= '9'; c++ {
		t[c] |= cDigit | cLocal | cDomain | cB64URL
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] |= cLetter | cLocal | cDomain | cB64URL
		t[c-'a'+'A'] |= cLetter | cUpper | cLocal | cDomain | cB64URL
	}
	for _, c := range "abcdefABCDEF" {
		t[c] |= cHexLetter
	}
	for _, c := range "0123456789abcdef" {
		t[c] |= cHexLower
	}
	for _, c := range "._%+-" {
		t[c] |= cLocal
	}
	for _, c := range ".-" {
		t[c] |= cDomain
	}
	for _, c := range "_-" {
		t[c] |= cB64URL
	}
	return t
}()

func isDigit(c byte) bool { return class[c]&cDigit != 0 }
func isHex(c byte) bool   { return class[c]&(cDigit|cHexLetter) != 0 }
func isAlnum(c byte) bool { return class[c]&(cDigit|cLetter) != 0 }

// alnumAt reports whether s[i] exists and is a letter or digit.
func alnumAt(s []byte, i int) bool { return i >= 0 && i < len(s) && isAlnum(s[i]) }

// scanPatterns returns the patterns (of want) that s holds. Each check is
// guarded by counts gathered in one pass, so most strings run none.
func scanPatterns(s []byte, want patternSet) patternSet {
	if isTimestamp(s) {
		return 0
	}
	return scanAll(s, want)
}

// isTimestamp reports whether s is exactly an RFC 3339 date-time:
// DDDD-DD-DD, 'T', 't' or a space, DD:DD:DD, optionally '.' and 1 to 9
// digits, optionally 'Z', 'z' or [+-]DD:DD. No pattern can be found in such
// a string, so scanPatterns answers at once for the one string most
// records hold that is new every time (TestPatternGuards checks it):
// there is no '@', "%40", "eyJ", "-----", '_' or capital but 'T' and 'Z'
// (no e-mail, JWT, private key or cloud key); at most one '.' (no IPv4,
// no Cisco MAC); colons only between two-digit groups (no "::", at most
// four, so no IPv6; no colon MAC); dashes only in the date and the offset
// (no dash MAC; no SSN, whose groups would need a dash three and six
// bytes after a non-alphanumeric start); digit runs joined by a space or
// a dash of at most 11 digits (the date and the hour, or the fraction and
// the offset's hour: no card, no SSN); and no two letters in a row (no
// IBAN).
func isTimestamp(s []byte) bool {
	const layout = "0000-00-00T00:00:00"
	if len(s) < len(layout) || len(s) > len(layout)+10+6 {
		return false
	}
	if !tsDate.match(binary.LittleEndian.Uint64(s)) || !tsTime.match(binary.LittleEndian.Uint64(s[11:])) ||
		!isDigit(s[8]) || !isDigit(s[9]) || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') {
		return false
	}
	rest := s[len(layout):]
	if len(rest) > 0 && rest[0] == '.' {
		n := 1
		for n < len(rest) && n <= 9 && rest[n] >= '0' && rest[n] <= '9' {
			n++
		}
		if n == 1 {
			return false
		}
		rest = rest[n:]
	}
	switch {
	case len(rest) == 0:
		return true
	case len(rest) == 1:
		return rest[0] == 'Z' || rest[0] == 'z'
	case len(rest) == 6:
		return (rest[0] == '+' || rest[0] == '-') && isDigit(rest[1]) && isDigit(rest[2]) && rest[3] == ':' && isDigit(rest[4]) && isDigit(rest[5])
	}
	return false
}

// tsDate and tsTime are the eight bytes at 0 and at 11 of a timestamp.
var tsDate, tsTime = newTemplate("0000-00-"), newTemplate("00:00:00")

// template tests eight bytes at once against a layout of digits ('0')
// and fixed bytes.
type template struct{ digits, fixed, want uint64 }

func newTemplate(layout string) (t template) {
	for i := range 8 {
		if layout[i] == '0' {
			t.digits |= 0xff << (8 * i)
		} else {
			t.fixed |= 0xff << (8 * i)
			t.want |= uint64(layout[i]) << (8 * i)
		}
	}
	return t
}

// match reports whether x (little-endian) fits the layout: the fixed
// bytes equal, and every digit byte, xor '0', at most 9 (its high nibble
// zero, and adding 0x76 leaves its top bit clear, without a carry since
// it is at most 0x0f).
// set makes byte i of t a digit when c is one, and c itself otherwise.
func (t *template) set(i int, c byte) {
	if isDigit(c) {
		t.digits |= 0xff << (8 * i)
		return
	}
	t.fixed |= 0xff << (8 * i)
	t.want |= uint64(c) << (8 * i)
}

func (t template) match(x uint64) bool {
	if x&t.fixed != t.want {
		return false
	}
	y := (x ^ lsb*'0') & t.digits
	return y&(lsb*0xf0) == 0 && (y+(lsb*0x76&t.digits))&msb == 0
}

// scanAll is scanPatterns without the timestamp shortcut.
func scanAll(s []byte, want patternSet) patternSet {
	var at, dot, colon, dash, digit, pct, ibanStarts int
	// run counts the digits of the current run of digit groups joined by a
	// space or dash (as card numbers and SSNs are written); maxRun is the
	// longest. A separator after a non-digit ends the run, so this may
	// overcount a run but never undercount one.
	var run, maxRun int
	doubleColon, prevColon := false, false
	var hist uint32 // classes of the last three bytes, the latest lowest
	for _, c := range s {
		cl := class[c]
		wasColon := prevColon
		prevColon = c == ':'
		if cl&cDigit != 0 {
			digit++
			run++
			maxRun = max(maxRun, run)
			if hist&cDigit != 0 && hist>>8&cLetter != 0 && hist>>16&cLetter != 0 {
				ibanStarts++
			}
		} else {
			if (c != ' ' && c != '-') || hist&cDigit == 0 {
				run = 0
			}
			switch c {
			case '.':
				dot++
			case ':':
				colon++
				doubleColon = doubleColon || wasColon
			case '-':
				dash++
			case '@':
				at++
			case '%':
				pct++
			}
		}
		hist = hist<<8 | uint32(cl)
	}
	var found patternSet
	test := func(p pattern, guard bool, f func([]byte) bool) {
		if want.has(p) && guard && f(s) {
			found |= 1 << p
		}
	}
	test(patEmail, at > 0 || pct > 0, hasEmail)
	test(patIPv4, dot >= 3 && digit >= 4, hasIPv4)
	// IPv6: a run with "::" or seven colons.
	test(patIPv6, colon >= 2 && (doubleColon || colon >= 7), hasIPv6)
	test(patMAC, colon >= 5 || dash >= 5 || dot >= 2, hasMAC)
	test(patCard, maxRun >= 13, hasCard)
	test(patIBAN, ibanStarts > 0 && len(s) >= 15, hasIBAN)
	test(patSSN, maxRun >= 9, hasSSN)
	test(patJWT, dot >= 2 && len(s) >= 30, hasJWT)
	test(patCloudKey, len(s) >= 20 && (bytes.IndexByte(s, 'A') >= 0 || bytes.IndexByte(s, '_') >= 0), hasCloudKey)
	test(patPrivateKey, dash >= 10, hasPrivateKey)
	return found
}

// hasEmail finds local@domain.tld, with '@' also written as %40 (URLs).
func hasEmail(s []byte) bool {
	for i := 0; i < len(s); i++ {
		var end int // index after the '@' or "%40"
		switch {
		case s[i] == '@':
			end = i + 1
		case s[i] == '%' && i+2 < len(s) && s[i+1] == '4' && s[i+2] == '0':
			end = i + 3
		default:
			continue
		}
		l := i
		for l > 0 && class[s[l-1]]&cLocal != 0 {
			l--
		}
		if l == i {
			continue
		}
		r := end
		for r < len(s) && class[s[r]]&cDomain != 0 {
			r++
		}
		for r > end && (s[r-1] == '.' || s[r-1] == '-') {
			r--
		}
		dom := s[end:r]
		lastDot := bytes.LastIndexByte(dom, '.')
		if lastDot <= 0 || dom[0] == '.' || bytes.Contains(dom, []byte("..")) {
			continue
		}
		tld := dom[lastDot+1:]
		ok := len(tld) >= 2
		for _, c := range tld {
			ok = ok && class[c]&cLetter != 0
		}
		if ok {
			return true
		}
	}
	return false
}

// hasIPv4 finds a dotted quad with octets up to 255 that is not part of a
// longer dotted number or a version string ("Firefox/1.2.3.4", "rv:1.9.2.3").
func hasIPv4(s []byte) bool {
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) || (i > 0 && (isAlnum(s[i-1]) || (s[i-1] == '.' && alnumAt(s, i-2)))) {
			continue
		}
		j, ok := i, true
		for part := range 4 {
			if part > 0 {
				if j >= len(s) || s[j] != '.' {
					ok = false
					break
				}
				j++
			}
			v, n := 0, 0
			for j < len(s) && isDigit(s[j]) && n < 4 {
				v = v*10 + int(s[j]-'0')
				j++
				n++
			}
			if n == 0 || n > 3 || v > 255 {
				ok = false
				break
			}
		}
		if !ok || alnumAt(s, j) || (j+1 < len(s) && s[j] == '.' && isDigit(s[j+1])) {
			continue
		}
		if i > 0 && isVersionPrefix(s[:i]) {
			continue
		}
		return true
	}
	return false
}

// isVersionPrefix reports whether the text before a dotted quad makes it a
// version: "Name/" or "rv:".
func isVersionPrefix(p []byte) bool {
	n := len(p)
	switch {
	case p[n-1] == '/' && n >= 2 && class[p[n-2]]&cLetter != 0:
		return true
	case n >= 3 && p[n-1] == ':' && (p[n-2] == 'v' || p[n-2] == 'V') && (p[n-3] == 'r' || p[n-3] == 'R'):
		return true
	}
	return false
}

func str(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// hasIPv6 finds a run of hex digits, colons and dots, standing alone, that
// parses as an IPv6 address written with "::" or eight groups.
func hasIPv6(s []byte) bool {
	for i := 0; i < len(s); {
		c := s[i]
		if !isHex(c) && c != ':' {
			i++
			continue
		}
		j := i
		colons, double := 0, false
		for j < len(s) && (isHex(s[j]) || s[j] == ':' || s[j] == '.') {
			if s[j] == ':' {
				colons++
				if j > i && s[j-1] == ':' {
					double = true
				}
			}
			j++
		}
		run := s[i:j]
		for len(run) > 0 && run[len(run)-1] == '.' {
			run = run[:len(run)-1]
		}
		if len(run) > 0 && run[len(run)-1] == ':' && !bytes.HasSuffix(run, []byte("::")) {
			run = run[:len(run)-1]
		}
		if (double || colons == 7) && colons >= 2 && !alnumAt(s, i-1) && !alnumAt(s, j) {
			if ip, err := netip.ParseAddr(str(run)); err == nil && ip.Is6() && !ip.IsLoopback() && !ip.IsUnspecified() {
				return true
			}
		}
		i = j
	}
	return false
}

// hasMAC finds six hex pairs joined by ':' or '-', or three hex quads
// joined by '.' (Cisco form, needing a letter so it is not a dotted number).
func hasMAC(s []byte) bool {
	for i := 0; i+14 <= len(s); i++ {
		if !isHex(s[i]) || alnumAt(s, i-1) {
			continue
		}
		if i+17 <= len(s) && (s[i+2] == ':' || s[i+2] == '-') {
			sep, ok := s[i+2], true
			for g := range 6 {
				p := i + 3*g
				if !isHex(s[p]) || !isHex(s[p+1]) || (g < 5 && s[p+2] != sep) {
					ok = false
					break
				}
			}
			if ok && !alnumAt(s, i+17) && !(i+17 < len(s) && s[i+17] == sep) && !(i > 0 && s[i-1] == sep) {
				return true
			}
		}
		if s[i+4] == '.' {
			ok, letter := true, false
			for g := range 3 {
				p := i + 5*g
				for k := range 4 {
					ok = ok && isHex(s[p+k])
					letter = letter || class[s[p+k]]&cHexLetter != 0
				}
				if g < 2 {
					ok = ok && s[p+4] == '.'
				}
			}
			if ok && letter && !alnumAt(s, i+14) && !(i+15 < len(s) && s[i+14] == '.' && isHex(s[i+15])) {
				return true
			}
		}
	}
	return false
}

// hasCard finds 13 to 19 digits, optionally grouped by single spaces or
// dashes, starting like a card network (2 to 6) and passing Luhn. A run of
// groups is tried from every group boundary, so a card after other numbers
// is still found.
func hasCard(s []byte) bool {
	var digits [64]byte
	var groups [32]int // start of each group in digits
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) || alnumAt(s, i-1) {
			continue
		}
		nd, ng, j := 0, 0, i
		groups[0] = 0
		ng = 1
		for j < len(s) && nd < len(digits) {
			c := s[j]
			if isDigit(c) {
				digits[nd] = c - '0'
				nd++
				j++
				continue
			}
			if (c == ' ' || c == '-') && j+1 < len(s) && isDigit(s[j+1]) && ng < len(groups) {
				groups[ng] = nd
				ng++
				j++
				continue
			}
			break
		}
		if nd < 13 || alnumAt(s, j) {
			i = j
			continue
		}
		for g := range ng {
			start := groups[g]
			for e := g + 1; e <= ng; e++ {
				end := nd
				if e < ng {
					end = groups[e]
				}
				n := end - start
				if n > 19 {
					break
				}
				if n >= 13 && digits[start] >= 2 && digits[start] <= 6 && luhn(digits[start:end]) {
					return true
				}
			}
		}
		i = j
	}
	return false
}

func luhn(d []byte) bool {
	sum := 0
	for i := range d {
		v := int(d[len(d)-1-i])
		if i%2 == 1 {
			v *= 2
			if v > 9 {
				v -= 9
			}
		}
		sum += v
	}
	return sum%10 == 0
}

// ibanLengths is the IBAN length per country (SWIFT IBAN registry).
var ibanLengths = map[string]int{
	"AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
	"BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
	"ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28,
	"HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
	"LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
	"MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29,
	"RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28,
	"TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}

// hasIBAN finds a country code, two check digits and the account, written
// solid or in groups split by single spaces, of the country's length (15 to
// 34 for countries not in the table, then only in capitals), whose mod-97
// check is 1.
func hasIBAN(s []byte) bool {
	var buf [34]byte
	for i := 0; i+15 <= len(s); i++ {
		if class[s[i]]&cLetter == 0 || class[s[i+1]]&cLetter == 0 || !isDigit(s[i+2]) || !isDigit(s[i+3]) || alnumAt(s, i-1) {
			continue
		}
		cc := [2]byte{upper(s[i]), upper(s[i+1])}
		want, known := ibanLengths[string(cc[:])]
		if !known && (class[s[i]]&cUpper == 0 || class[s[i+1]]&cUpper == 0) {
			continue
		}
		n := 0
		for j := i; j < len(s) && n < len(buf); j++ {
			c := s[j]
			if c == ' ' && n > 0 && j+1 < len(s) && isAlnum(s[j+1]) {
				continue
			}
			if !isAlnum(c) {
				break
			}
			buf[n] = upper(c)
			n++
			// A candidate ends where the text does or a group does.
			if end := j + 1; !alnumAt(s, end) && n >= 15 && (!known || n == want) && mod97(buf[:n]) == 1 {
				return true
			}
		}
	}
	return false
}

func upper(c byte) byte {
	if 'a' <= c && c <= 'z' {
		return c - 'a' + 'A'
	}
	return c
}

// mod97 computes the IBAN check over iban rearranged (first four last,
// letters as 10 to 35).
func mod97(iban []byte) int {
	r := 0
	step := func(c byte) {
		if isDigit(c) {
			r = (r*10 + int(c-'0')) % 97
		} else {
			r = (r*100 + int(c-'A') + 10) % 97
		}
	}
	for _, c := range iban[4:] {
		step(c)
	}
	for _, c := range iban[:4] {
		step(c)
	}
	return r
}

// hasSSN finds a US social security number, ddd-dd-dddd or ddd dd dddd,
// with a valid area (not 000, 666 or 9xx), group and serial.
func hasSSN(s []byte) bool {
	for i := 0; i+11 <= len(s); i++ {
		sep := s[i+3]
		if sep != '-' && sep != ' ' || s[i+6] != sep || alnumAt(s, i-1) || alnumAt(s, i+11) {
			continue
		}
		if i > 1 && s[i-1] == sep && isDigit(s[i-2]) || i+12 < len(s) && s[i+11] == sep && isDigit(s[i+12]) {
			continue // part of a longer grouped number
		}
		ok := true
		for _, k := range [...]int{0, 1, 2, 4, 5, 7, 8, 9, 10} {
			ok = ok && isDigit(s[i+k])
		}
		if !ok {
			continue
		}
		area := string(s[i : i+3])
		if area == "000" || area == "666" || s[i] == '9' || string(s[i+4:i+6]) == "00" || string(s[i+7:i+11]) == "0000" {
			continue
		}
		return true
	}
	return false
}

// hasJWT finds header.payload[.signature] with both JSON parts starting
// with "eyJ" (base64url of `{"`).
func hasJWT(s []byte) bool {
	for off := 0; ; {
		k := bytes.Index(s[off:], []byte("eyJ"))
		if k < 0 {
			return false
		}
		i := off + k
		off = i + 3
		if i > 0 && class[s[i-1]]&cB64URL != 0 {
			continue
		}
		j := b64Run(s, i)
		if j-i < 10 || j+4 >= len(s) || s[j] != '.' || !bytes.HasPrefix(s[j+1:], []byte("eyJ")) {
			continue
		}
		if e := b64Run(s, j+1); e-(j+1) >= 10 && e < len(s) && s[e] == '.' {
			return true
		}
	}
}

func b64Run(s []byte, i int) int {
	for i < len(s) && class[s[i]]&cB64URL != 0 {
		i++
	}
	return i
}

var cloudPrefixes = []struct {
	prefix  string
	n       int   // characters after the prefix
	charset uint8 // class bits allowed
}{
	{"AKIA", 16, cDigit | cUpper},
	{"ASIA", 16, cDigit | cUpper},
	{"AIza", 35, cB64URL},
	{"ghp_", 36, cDigit | cLetter},
	{"gho_", 36, cDigit | cLetter},
	{"ghs_", 36, cDigit | cLetter},
}

// hasCloudKey finds AWS access key ids, Google API keys and GitHub tokens
// standing alone.
func hasCloudKey(s []byte) bool {
	for _, p := range cloudPrefixes {
		for off := 0; ; {
			k := bytes.Index(s[off:], []byte(p.prefix))
			if k < 0 {
				break
			}
			i := off + k
			off = i + 1
			end := i + len(p.prefix) + p.n
			if end > len(s) || (i > 0 && class[s[i-1]]&cB64URL != 0) || (end < len(s) && class[s[end]]&cB64URL != 0) {
				continue
			}
			ok := true
			for _, c := range s[i+len(p.prefix) : end] {
				if class[c]&p.charset == 0 || (p.charset&cUpper != 0 && class[c]&cLetter != 0 && class[c]&cUpper == 0) {
					ok = false
					break
				}
			}
			if ok {
				return true
			}
		}
	}
	return false
}

// hasPrivateKey finds a PEM private-key block header.
func hasPrivateKey(s []byte) bool {
	i := bytes.Index(s, []byte("-----BEGIN "))
	return i >= 0 && bytes.Contains(s[i:], []byte("PRIVATE KEY-----"))
}
