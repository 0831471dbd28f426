package avrocodec

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"unicode/utf8"
)

// The decoder reads a binary body straight into JSON bytes, walking the
// parsed schema: no goavro native values (maps of interfaces, boxed
// numbers) in between. It writes exactly what AppendJSON writes for the
// native value goavro decodes from the same body (the tests compare the
// two on generated records and under fuzzing), with one addition: nesting
// deeper than MaxDepth JSON containers is refused, as the JSON scanner
// the routes use would refuse it.

// MaxDepth bounds the nesting of decoded records, arrays and maps (as JSON
// containers), so that a recursive schema and a hostile body cannot
// exhaust the stack. It matches jsonscan.MaxDepth.
const MaxDepth = 64

// errTooDeep is wrapped by a decoding error for nesting past MaxDepth.
var errTooDeep = fmt.Errorf("%w: nested more than %d deep", ErrSchemaMismatch, MaxDepth)

// decodeBody appends the JSON form of the single record in body.
func decodeBody(dst []byte, t *Type, body []byte) ([]byte, error) {
	d := binDecoder{b: body}
	start := len(dst)
	dst, err := d.value(dst, t, 0)
	if err != nil {
		return dst[:start], err
	}
	if d.p < len(d.b) {
		return dst[:start], &PathError{Err: fmt.Errorf("%w: %d bytes left after the record (of %d)", ErrSchemaMismatch, len(d.b)-d.p, len(d.b))}
	}
	return dst, nil
}

// binDecoder is a position in a binary body.
type binDecoder struct {
	b []byte
	p int
}

var (
	errTruncated = &PathError{Err: ErrTruncated}
	errIndex     = fmt.Errorf("%w: enum or union index out of range", ErrSchemaMismatch)
	errNegative  = fmt.Errorf("%w: negative length", ErrSchemaMismatch)
	errLength    = fmt.Errorf("%w: length out of range", ErrSchemaMismatch)
	errVarint    = fmt.Errorf("%w: invalid data (varint too long)", ErrSchemaMismatch)
	errBoolean   = fmt.Errorf("%w: invalid data (boolean is neither 0 nor 1)", ErrSchemaMismatch)
	errIntRange  = fmt.Errorf("%w: invalid data (int out of range)", ErrSchemaMismatch)
	errDupKey    = fmt.Errorf("%w: map key appears twice", ErrSchemaMismatch)
)

// long reads a zig-zag varint.
func (d *binDecoder) long() (int64, error) {
	var u uint64
	for shift := uint(0); shift < 70; shift += 7 {
		if d.p >= len(d.b) {
			return 0, ErrTruncated
		}
		c := d.b[d.p]
		d.p++
		u |= uint64(c&0x7f) << shift
		if c < 0x80 {
			return int64(u>>1) ^ -int64(u&1), nil
		}
	}
	return 0, errVarint
}

// length reads a byte length and checks that many bytes follow.
func (d *binDecoder) length() (int, error) {
	n, err := d.long()
	switch {
	case err != nil:
		return 0, err
	case n < 0:
		return 0, errNegative
	case n > int64(len(d.b)-d.p):
		return 0, ErrTruncated
	}
	return int(n), nil
}

// at wraps a failure at the value being decoded (its path is added by the
// callers as the error unwinds).
func at(err error) error {
	if _, ok := err.(*PathError); ok {
		return err
	}
	return &PathError{Err: err}
}

// under prefixes a PathError's path with seg (a field name, "[]" for an
// array element, "(value)" for a map value).
func under(seg string, err error) error {
	pe, ok := err.(*PathError)
	if !ok {
		return &PathError{Path: seg, Err: err}
	}
	// A new error: pe may be shared (a sentinel, a field's missing error).
	switch {
	case pe.Path == "":
		return &PathError{Path: seg, Err: pe.Err}
	case pe.Path[0] == '[':
		return &PathError{Path: seg + pe.Path, Err: pe.Err}
	}
	return &PathError{Path: seg + "." + pe.Path, Err: pe.Err}
}

func (d *binDecoder) value(dst []byte, t *Type, depth int) ([]byte, error) {
	switch t.Kind {
	case Null:
		return append(dst, "null"...), nil
	case Boolean:
		if d.p >= len(d.b) {
			return dst, errTruncated
		}
		c := d.b[d.p]
		d.p++
		switch c {
		case 0:
			return append(dst, "false"...), nil
		case 1:
			return append(dst, "true"...), nil
		}
		return dst, at(errBoolean)
	case Int, Long:
		n, err := d.long()
		if err != nil {
			return dst, at(err)
		}
		if t.Kind == Int && (n < math.MinInt32 || n > math.MaxInt32) {
			return dst, at(errIntRange)
		}
		return strconv.AppendInt(dst, n, 10), nil
	case Float:
		if len(d.b)-d.p < 4 {
			d.p = len(d.b)
			return dst, errTruncated
		}
		f := math.Float32frombits(binary.LittleEndian.Uint32(d.b[d.p:]))
		d.p += 4
		if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
			return dst, at(fmt.Errorf("%w: float is NaN or infinite", ErrNotJSONable))
		}
		return strconv.AppendFloat(dst, float64(f), 'g', -1, 32), nil
	case Double:
		if len(d.b)-d.p < 8 {
			d.p = len(d.b)
			return dst, errTruncated
		}
		f := math.Float64frombits(binary.LittleEndian.Uint64(d.b[d.p:]))
		d.p += 8
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return dst, at(fmt.Errorf("%w: double is NaN or infinite", ErrNotJSONable))
		}
		return strconv.AppendFloat(dst, f, 'g', -1, 64), nil
	case String:
		n, err := d.length()
		if err != nil {
			return dst, at(err)
		}
		s := d.b[d.p : d.p+n]
		d.p += n
		out, ok := appendJSONString(dst, s)
		if !ok {
			return dst, at(fmt.Errorf("%w: string is not valid UTF-8", ErrNotJSONable))
		}
		return out, nil
	case Enum:
		i, err := d.long()
		if err != nil {
			return dst, at(err)
		}
		if i < 0 || i >= int64(len(t.Symbols)) {
			return dst, at(errIndex)
		}
		return append(dst, t.symJSON[i]...), nil
	case Bytes, Fixed:
		n := t.Size
		if t.Kind == Bytes {
			var err error
			if n, err = d.length(); err != nil {
				return dst, at(err)
			}
		} else if n > len(d.b)-d.p {
			d.p = len(d.b)
			return dst, errTruncated
		}
		b := d.b[d.p : d.p+n]
		d.p += n
		if t.Logical == "decimal" {
			return appendDecimal(dst, b, t.Scale), nil
		}
		return appendCodePoints(dst, b), nil
	case Record:
		if depth >= MaxDepth {
			return dst, at(errTooDeep)
		}
		dst = append(dst, '{')
		for i, f := range t.Fields {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, f.jsonKey...)
			var err error
			if dst, err = d.value(dst, f.Type, depth+1); err != nil {
				return dst, under(f.Name, err)
			}
		}
		return append(dst, '}'), nil
	case Array:
		if depth >= MaxDepth {
			return dst, at(errTooDeep)
		}
		dst = append(dst, '[')
		first := true
		for {
			n, err := d.block()
			if err != nil {
				return dst, under("[]", err)
			}
			if n == 0 {
				return append(dst, ']'), nil
			}
			for ; n > 0; n-- {
				if !first {
					dst = append(dst, ',')
				}
				first = false
				if dst, err = d.value(dst, t.Items, depth+1); err != nil {
					return dst, under("[]", err)
				}
			}
		}
	case Map:
		if depth >= MaxDepth {
			return dst, at(errTooDeep)
		}
		return d.mapValue(dst, t, depth)
	case Union:
		i, err := d.long()
		if err != nil {
			return dst, at(err)
		}
		if i < 0 || i >= int64(len(t.Branches)) {
			return dst, at(errIndex)
		}
		return d.value(dst, t.Branches[i], depth)
	}
	return dst, at(fmt.Errorf("%w: unsupported type %s", ErrSchemaMismatch, t.Kind))
}

// block reads an array or map block header: the item count (0 ends the
// list); a negative count is followed by the block's byte size.
func (d *binDecoder) block() (int64, error) {
	n, err := d.long()
	if err != nil {
		return 0, err
	}
	if n < 0 {
		if n == math.MinInt64 {
			return 0, errLength
		}
		n = -n
		if _, err := d.long(); err != nil {
			return 0, err
		}
	}
	// Every item takes at least one byte, except null and zero-size items;
	// bound the count so a hostile header cannot make the loop run long.
	if n > int64(len(d.b)-d.p) && n > 1<<20 {
		return 0, errLength
	}
	return n, nil
}

// entry is a decoded map entry's place in dst: the quoted key from start
// to colon, the whole `"key":value` from start to end (without a comma).
type entry struct{ start, colon, end int }

// mapValue decodes a map as a JSON object with its keys sorted (by bytes,
// as Go sorts strings).
func (d *binDecoder) mapValue(dst []byte, t *Type, depth int) ([]byte, error) {
	dst = append(dst, '{')
	open := len(dst)
	var small [8]entry
	ents := small[:0]
	sorted := true // strictly increasing keys so far
	for {
		n, err := d.block()
		if err != nil {
			return dst, under("(value)", err)
		}
		if n == 0 {
			break
		}
		for ; n > 0; n-- {
			kl, err := d.length()
			if err != nil {
				return dst, under("(value)", err) // the key is data: the path names the map
			}
			key := d.b[d.p : d.p+kl]
			d.p += kl
			if len(ents) > 0 {
				dst = append(dst, ',')
			}
			e := entry{start: len(dst)}
			var ok bool
			if dst, ok = appendJSONString(dst, key); !ok {
				return dst, at(fmt.Errorf("%w: map key is not valid UTF-8", ErrNotJSONable))
			}
			e.colon = len(dst)
			dst = append(dst, ':')
			if dst, err = d.value(dst, t.Values, depth+1); err != nil {
				return dst, under("(value)", err)
			}
			e.end = len(dst)
			if len(ents) > 0 && sorted {
				sorted = keyCmp(dst, ents[len(ents)-1], e) < 0
			}
			ents = append(ents, e)
		}
	}
	if !sorted {
		var err error
		if dst, err = sortEntries(dst, open, ents); err != nil {
			return dst, err
		}
	}
	return append(dst, '}'), nil
}

// keyCmp compares the keys of two entries by their unescaped bytes.
func keyCmp(dst []byte, a, b entry) int {
	ka, kb := dst[a.start+1:a.colon-1], dst[b.start+1:b.colon-1]
	if !hasEscape(ka) && !hasEscape(kb) {
		return bytes.Compare(ka, kb)
	}
	var sa, sb [64]byte
	return bytes.Compare(unescape(sa[:0], ka), unescape(sb[:0], kb))
}

func hasEscape(b []byte) bool { return bytes.IndexByte(b, '\\') >= 0 }

// unescape reverses appendJSONString's escapes.
func unescape(dst, b []byte) []byte {
	for i := 0; i < len(b); i++ {
		if b[i] != '\\' {
			dst = append(dst, b[i])
			continue
		}
		i++
		if b[i] == 'u' {
			v, _ := strconv.ParseUint(string(b[i+1:i+5]), 16, 8)
			dst = append(dst, byte(v))
			i += 4
			continue
		}
		dst = append(dst, b[i])
	}
	return dst
}

// sortEntries rewrites the entries written from start on in key order
// (insertion sort: maps are small), comma-separated; a key given twice is
// an error, as in goavro.
func sortEntries(dst []byte, start int, ents []entry) ([]byte, error) {
	for i := 1; i < len(ents); i++ {
		for j := i; j > 0 && keyCmp(dst, ents[j-1], ents[j]) > 0; j-- {
			ents[j-1], ents[j] = ents[j], ents[j-1]
		}
	}
	for i := 0; i+1 < len(ents); i++ {
		if keyCmp(dst, ents[i], ents[i+1]) == 0 {
			return dst, at(errDupKey)
		}
	}
	// Copy the region past its end, then write the entries back in order:
	// the writes never reach the copy.
	end := len(dst)
	dst = append(dst, dst[start:end]...)
	shift := end - start
	w := start
	for _, e := range ents {
		if w > start {
			dst[w] = ','
			w++
		}
		w += copy(dst[w:], dst[e.start+shift:e.end+shift])
	}
	return dst[:w], nil
}

// appendJSONString appends b as a JSON string, reporting false (and
// leaving dst as it was) when b is not valid UTF-8.
func appendJSONString(dst, b []byte) ([]byte, bool) {
	start := len(dst)
	dst = append(dst, '"')
	i := 0
	for i < len(b) {
		// A run of bytes that need nothing.
		j := i
		for j < len(b) && safeJSON[b[j]] {
			j++
		}
		dst = append(dst, b[i:j]...)
		if i = j; i >= len(b) {
			break
		}
		c := b[i]
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
			i++
		case c < 0x20:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&15])
			i++
		default:
			r, n := utf8.DecodeRune(b[i:])
			if r == utf8.RuneError && n <= 1 {
				return dst[:start], false
			}
			dst = append(dst, b[i:i+n]...)
			i += n
		}
	}
	return append(dst, '"'), true
}

const hexDigits = "0123456789abcdef"

// safeJSON marks the ASCII bytes a JSON string holds as they are.
var safeJSON = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// appendCodePoints appends bytes as a JSON string of code points 0-255,
// as Avro's JSON encoding writes bytes and fixed.
func appendCodePoints(dst, b []byte) []byte {
	dst = append(dst, '"')
	for _, c := range b {
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c < 0x20:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&15])
		case c < utf8.RuneSelf:
			dst = append(dst, c)
		default:
			dst = utf8.AppendRune(dst, rune(c))
		}
	}
	return append(dst, '"')
}

// appendDecimal appends the decimal whose unscaled value is the big-endian
// two's complement b.
func appendDecimal(dst, b []byte, scale int) []byte {
	n := new(big.Int).SetBytes(b)
	if len(b) > 0 && b[0]&0x80 != 0 {
		n.Sub(n, new(big.Int).Lsh(big.NewInt(1), uint(8*len(b))))
	}
	r := new(big.Rat).SetFrac(n, new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(scale)), nil))
	return append(dst, r.FloatString(scale)...)
}
